//go:build unix

package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
)

// errDataDirBusy is returned when another process holds a data directory's lock.
var errDataDirBusy = errors.New("in use by another ferry process")

// lockFile takes an exclusive lock on name, held until unlock or the process's end (the
// kernel drops it on exit, even after SIGKILL, so a crash leaves no stale lock). The file
// holds the holder's pid, for the error of the next one.
func lockFile(name string) (unlock func(), err error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b := make([]byte, 32)
		n, _ := f.Read(b)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			if pid, perr := strconv.Atoi(string(bytes.TrimSpace(b[:n]))); perr == nil {
				return nil, fmt.Errorf("%w (pid %d)", errDataDirBusy, pid)
			}
			return nil, errDataDirBusy
		}
		return nil, err
	}
	f.Truncate(0)
	f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return func() { f.Close() }, nil
}
