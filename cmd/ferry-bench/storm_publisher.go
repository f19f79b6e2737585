package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// stormPublisher publishes to one node at a steady rate and remembers the last accepted
// position.
type stormPublisher struct {
	url, key, channel string
	hc                *http.Client
	mu                sync.Mutex
	ep                string
	off               uint64
	ok, failed        atomic.Int64
}

func (p *stormPublisher) run(ctx context.Context, rate float64) {
	t := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer t.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := p.publish(ctx, i); err != nil {
			p.failed.Add(1)
		} else {
			p.ok.Add(1)
		}
	}
}

func (p *stormPublisher) publish(ctx context.Context, i int) error {
	body := fmt.Appendf(nil, `{"channel":%q,"data":{"i":%d,"ts":%d}}`, p.channel, i, time.Now().UnixMilli())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+p.key)
	resp, err := p.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var a struct {
		Epoch  string `json:"epoch"`
		Offset uint64 `json:"offset"`
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("publish: HTTP %d", resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		return err
	}
	p.mu.Lock()
	if a.Epoch != p.ep || a.Offset > p.off {
		p.ep, p.off = a.Epoch, a.Offset
	}
	p.mu.Unlock()
	return nil
}

func (p *stormPublisher) last() (string, uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ep, p.off
}
