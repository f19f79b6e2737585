package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTick is the unit of utime and stime in /proc/<pid>/stat. Linux reports them in
// USER_HZ, which is 100 on every architecture Go supports.
const clockTick = 10 * time.Millisecond

// rssKiB returns the resident memory (VmRSS) of process pid in KiB.
func rssKiB(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range bytes.Lines(b) {
		if v, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			f := strings.Fields(string(v))
			if len(f) == 0 {
				break
			}
			return strconv.ParseInt(f[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// cpuTime returns the user plus system CPU time of process pid ("self" for this one).
func cpuTime(pid string) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces and parentheses: fields are counted
	// after its closing parenthesis. utime and stime are fields 14 and 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc/%s/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("malformed /proc/%s/stat", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("malformed /proc/%s/stat", pid)
	}
	return time.Duration(ut+st) * clockTick, nil
}

// raiseFileLimit lifts the soft limit on open files to the hard limit: every client
// holds at least one descriptor.
func raiseFileLimit() (uint64, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, err
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			return 0, err
		}
	}
	return rl.Cur, nil
}

// maxClients is the most clients a broadcast run opens: one descriptor each under the
// hard open-file limit (which raiseFileLimit lifts the soft one to), leaving 100 for the
// publisher, the probe and the runtime. The server holds one per client too, under its
// own limit.
func maxClients() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Max < 1100 {
		return 1000
	}
	return int(min(rl.Max-100, 1_000_000))
}

// probe reads a local server's memory and CPU, summed over its processes (Ferry's
// nodes, Redis's); with no pid it reports nothing.
type probe struct{ pids []int }

func newProbe(pids []int) *probe { return &probe{pids: pids} }

// rss returns the resident memory of every process, summed; 0 if one cannot be read.
func (p *probe) rss() int64 {
	var sum int64
	for _, pid := range p.pids {
		v, err := rssKiB(pid)
		if err != nil {
			return 0
		}
		sum += v
	}
	return sum
}

// cpu returns the CPU time of every process, summed; -1 without pids or if one cannot
// be read.
func (p *probe) cpu() time.Duration {
	each := p.cpus()
	if len(each) == 0 {
		return -1
	}
	var sum time.Duration
	for _, v := range each {
		if v < 0 {
			return -1
		}
		sum += v
	}
	return sum
}

// cpus returns the CPU time of each process, -1 for one that cannot be read.
func (p *probe) cpus() []time.Duration {
	out := make([]time.Duration, len(p.pids))
	for i, pid := range p.pids {
		v, err := cpuTime(strconv.Itoa(pid))
		if err != nil {
			v = -1
		}
		out[i] = v
	}
	return out
}

// procName returns the command name of process pid (its /proc comm), "?" if unknown.
func procName(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

func selfCPU() time.Duration {
	v, err := cpuTime("self")
	if err != nil {
		return -1
	}
	return v
}

// sampleRSS samples the server's memory every interval until stop is called, which
// returns what it saw (nil without samples). The first sample is taken at once.
func (p *probe) sampleRSS(every time.Duration) (stop func() *RSSTrace) {
	done := make(chan struct{})
	out := make(chan *RSSTrace, 1)
	go func() {
		t := &RSSTrace{EveryMs: ms(every)}
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			if v := p.rss(); v > 0 {
				t.add(v)
			}
			select {
			case <-tick.C:
			case <-done:
				if v := p.rss(); v > 0 {
					t.add(v)
				}
				if len(t.Samples) == 0 {
					t = nil
				}
				out <- t
				return
			}
		}
	}()
	return func() *RSSTrace {
		close(done)
		return <-out
	}
}

func (t *RSSTrace) add(v int64) {
	if len(t.Samples) == 0 {
		t.First, t.Min, t.Max = v, v, v
	}
	t.Samples = append(t.Samples, v)
	t.Last = v
	t.Min = min(t.Min, v)
	t.Max = max(t.Max, v)
}
