package redis

import (
	"context"

	goredis "github.com/redis/go-redis/v9"

	"github.com/ferryrt/ferry/bridge/broker"
)

// Calls in flight at once go to Redis together. Each publish, and each session touch and
// presence refresh of a heartbeat, is a script call (or a command) whose answer its caller
// waits for; one at a time, a node's rate is one round trip per call. A benchmark showed
// that to be the bound of publishing at many channels (neither the node nor Redis was
// busy), and the heartbeats of 10,000 sessions that connected together made 2,000 round
// trips a second on a busy node. So a few pipeliners each take every call waiting (up to
// pipelineBatch) and send them in one pipeline: one round trip for all of them, and
// go-redis splits a cluster's pipeline by the node of each key. A retry of a pipeline
// (go-redis's, on a network error) repeats calls that may have run, as a retry of a single
// call does: a publish carries its publish id, which the script checks, so each still
// lands once; a touch only moves an expiry; a presence change adds to or removes from a
// set, and announces only a change.

const (
	pipeliners    = 4  // pipelines in flight at once
	pipelineBatch = 64 // calls in one pipeline at most
)

// pipelineCall is one call waiting for its pipeline: script with keys and args, or, with no
// script, the command args. Once done is closed, cmd holds its answer.
type pipelineCall struct {
	script *goredis.Script
	keys   []string
	args   []any
	cmd    *goredis.Cmd
	done   chan struct{}
}

// alone makes the call outside a pipeline; a script goes as EVALSHA, then as EVAL if
// Redis does not have it.
func (c *pipelineCall) alone(ctx context.Context, rdb goredis.UniversalClient) *goredis.Cmd {
	if c.script == nil {
		return rdb.Do(ctx, c.args...)
	}
	return c.script.Run(ctx, rdb, c.keys, c.args...)
}

// runScript calls script with keys and args, in a pipeline with whatever other calls wait
// at the same time, and returns its answer. The answer holds ctx's error if ctx ends first
// (the call may have been sent), and broker.ErrBrokerClosed once the broker is closed.
func (b *Broker) runScript(ctx context.Context, script *goredis.Script, keys []string, args ...any) *goredis.Cmd {
	return b.pipelined(ctx, &pipelineCall{script: script, keys: keys, args: args, done: make(chan struct{})})
}

// runCommand sends the command args as runScript sends a script call.
func (b *Broker) runCommand(ctx context.Context, args ...any) *goredis.Cmd {
	return b.pipelined(ctx, &pipelineCall{args: args, done: make(chan struct{})})
}

// pipelined hands c to a pipeliner and waits for its answer.
func (b *Broker) pipelined(ctx context.Context, c *pipelineCall) *goredis.Cmd {
	select {
	case b.calls <- c:
	case <-ctx.Done():
		return goredis.NewCmdResult(nil, ctx.Err())
	case <-b.ctx.Done():
		return goredis.NewCmdResult(nil, broker.ErrBrokerClosed)
	}
	select {
	case <-c.done:
		return c.cmd
	case <-ctx.Done():
		return goredis.NewCmdResult(nil, ctx.Err())
	}
}

// pipeliner sends the calls waiting in b.calls in pipelines until the broker closes.
func (b *Broker) pipeliner() {
	batch := make([]*pipelineCall, 0, pipelineBatch)
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
// own, which loads it. A cluster's pipeline finds each command's node by its first key.
func (b *Broker) sendCalls(calls []*pipelineCall) {
	// Not a caller's context: one caller giving up must not fail the others' calls. Each
	// attempt is bounded by go-redis's timeouts, and the retries by its MaxRetries.
	ctx := b.ctx
	if len(calls) == 1 {
		c := calls[0]
		c.cmd = c.alone(ctx, b.rdb)
		close(c.done)
		return
	}
	// Pipelined returns every command, each with its own answer or error.
	cmds, _ := b.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for _, c := range calls {
			if c.script == nil {
				p.Do(ctx, c.args...)
			} else {
				c.script.EvalSha(ctx, p, c.keys, c.args...)
			}
		}
		return nil
	})
	for i, c := range calls {
		c.cmd = cmds[i].(*goredis.Cmd)
		if c.script != nil && goredis.HasErrorPrefix(c.cmd.Err(), "NOSCRIPT") {
			c.cmd = c.alone(ctx, b.rdb)
		}
		close(c.done)
	}
}
