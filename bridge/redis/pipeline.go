package redis

import (
	"context"

	goredis "github.com/redis/go-redis/v9"

	"github.com/ferryrt/ferry/bridge/broker"
)

// Script calls in flight at once go to Redis together. Each publish, and each session
// touch of a heartbeat, is one script call whose answer its caller waits for; one at a
// time, a node's rate is one round trip per call. A benchmark showed that to be the bound
// of publishing at many channels (neither the node nor Redis was busy), and the heartbeats
// of 10,000 sessions that connected together made 2,000 round trips a second on a busy
// node. So a few pipeliners each take every call waiting (up to pipelineBatch) and send
// them in one pipeline: one round trip for all of them, and go-redis splits a cluster's
// pipeline by the node of each key. A retry of a pipeline (go-redis's, on a network
// error) repeats calls that may have run, as a retry of a single call does: a publish
// carries its publish id, which the script checks, so each still lands once, and a touch
// only moves an expiry.

const (
	pipeliners    = 4  // pipelines in flight at once
	pipelineBatch = 64 // calls in one pipeline at most
)

// scriptCall is one script call waiting for its pipeline; once done is closed, cmd holds
// its answer.
type scriptCall struct {
	script *goredis.Script
	keys   []string
	args   []any
	cmd    *goredis.Cmd
	done   chan struct{}
}

// runScript calls script with keys and args, in a pipeline with whatever other calls wait
// at the same time, and returns its answer. The answer holds ctx's error if ctx ends first
// (the call may have been sent), and broker.ErrBrokerClosed once the broker is closed.
func (b *Broker) runScript(ctx context.Context, script *goredis.Script, keys []string, args ...any) *goredis.Cmd {
	c := &scriptCall{script: script, keys: keys, args: args, done: make(chan struct{})}
	select {
	case b.calls <- c:
	case <-ctx.Done():
		return failedCmd(ctx, ctx.Err())
	case <-b.ctx.Done():
		return failedCmd(ctx, broker.ErrBrokerClosed)
	}
	select {
	case <-c.done:
		return c.cmd
	case <-ctx.Done():
		return failedCmd(ctx, ctx.Err())
	}
}

func failedCmd(ctx context.Context, err error) *goredis.Cmd {
	cmd := goredis.NewCmd(ctx)
	cmd.SetErr(err)
	return cmd
}

// pipeliner sends the calls waiting in b.calls in pipelines until the broker closes.
func (b *Broker) pipeliner() {
	batch := make([]*scriptCall, 0, pipelineBatch)
	for {
		select {
		case c := <-b.calls:
			batch = append(batch[:0], c)
		case <-b.ctx.Done():
			return
		}
	more:
		for len(batch) < pipelineBatch {
			select {
			case c := <-b.calls:
				batch = append(batch, c)
			default:
				break more
			}
		}
		b.sendCalls(batch)
		clear(batch) // the calls' arguments are theirs, not the next batch's
	}
}

// sendCalls sends calls in one pipeline and hands each its answer. A script Redis does
// not have yet (NOSCRIPT: the first call after a start or a failover) is sent again on its
// own, which loads it.
func (b *Broker) sendCalls(calls []*scriptCall) {
	// Not a caller's context: one caller giving up must not fail the others' calls. Each
	// attempt is bounded by go-redis's timeouts, and the retries by its MaxRetries.
	ctx := b.ctx
	if len(calls) == 1 {
		c := calls[0]
		c.cmd = c.script.Run(ctx, b.rdb, c.keys, c.args...)
		close(c.done)
		return
	}
	// Pipelined returns every command, each with its own answer or error.
	cmds, _ := b.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for _, c := range calls {
			c.script.EvalSha(ctx, p, c.keys, c.args...)
		}
		return nil
	})
	for i, c := range calls {
		c.cmd = cmds[i].(*goredis.Cmd)
		if goredis.HasErrorPrefix(c.cmd.Err(), "NOSCRIPT") {
			c.cmd = c.script.Run(ctx, b.rdb, c.keys, c.args...)
		}
		close(c.done)
	}
}
