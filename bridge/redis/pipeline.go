package redis

import (
	"context"

	goredis "github.com/redis/go-redis/v9"

	"github.com/ferryrt/ferry/bridge/broker"
)

// Publishes in flight at once go to Redis together. Each publish is one script call whose
// answer its caller waits for; one at a time, a node's publishing rate is one round trip
// per publish, which a benchmark showed to be the bound at many channels (neither the node
// nor Redis was busy). So a few publishers each take every call waiting (up to
// pipelineBatch) and send them in one pipeline: one round trip for all of them, and go-redis
// splits a cluster's pipeline by the node of each key. A retry of a pipeline (go-redis's,
// on a network error) repeats calls that may have run: each carries its publish id, which
// the script checks, so each still lands once.

const (
	publishers    = 4  // pipelines in flight at once
	pipelineBatch = 64 // calls in one pipeline at most
)

// pubCall is one publish waiting for its pipeline: the script's keys and arguments, and,
// once done is closed, its answer.
type pubCall struct {
	keys []string
	args []any
	res  []any
	err  error
	done chan struct{}
}

// runPublish calls the publishing script with keys and args, in a pipeline with whatever
// other publishes wait at the same time, and returns its answer. It returns ctx's error
// if ctx ends first (the publish may have been sent: a retry with the same id is safe).
func (b *Broker) runPublish(ctx context.Context, keys []string, args ...any) ([]any, error) {
	c := &pubCall{keys: keys, args: args, done: make(chan struct{})}
	select {
	case b.pubq <- c:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-b.ctx.Done():
		return nil, broker.ErrBrokerClosed
	}
	select {
	case <-c.done:
		return c.res, c.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// publisher sends the calls of pubq in pipelines until the broker closes.
func (b *Broker) publisher() {
	batch := make([]*pubCall, 0, pipelineBatch)
	for {
		select {
		case c := <-b.pubq:
			batch = append(batch[:0], c)
		case <-b.ctx.Done():
			return
		}
	more:
		for len(batch) < pipelineBatch {
			select {
			case c := <-b.pubq:
				batch = append(batch, c)
			default:
				break more
			}
		}
		b.sendPublishes(batch)
	}
}

// sendPublishes sends calls in one pipeline and hands each its answer. A script Redis
// does not have yet (NOSCRIPT: the first publish after a start or a failover) is sent
// again on its own, which loads it.
func (b *Broker) sendPublishes(calls []*pubCall) {
	// Not a caller's context: one caller giving up must not fail the others' calls. Each
	// attempt is bounded by go-redis's timeouts, and the retries by its MaxRetries.
	ctx := b.ctx
	if len(calls) == 1 {
		c := calls[0]
		c.res, c.err = luaPublish.Run(ctx, b.rdb, c.keys, c.args...).Slice()
		close(c.done)
		return
	}
	// Pipelined returns every command, each with its own answer or error.
	cmds, _ := b.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for _, c := range calls {
			luaPublish.EvalSha(ctx, p, c.keys, c.args...)
		}
		return nil
	})
	for i, c := range calls {
		c.res, c.err = cmds[i].(*goredis.Cmd).Slice()
		if c.err != nil && goredis.HasErrorPrefix(c.err, "NOSCRIPT") {
			c.res, c.err = luaPublish.Run(ctx, b.rdb, c.keys, c.args...).Slice()
		}
		close(c.done)
	}
}
