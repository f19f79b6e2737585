package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"
)

// publisher publishes through the server's HTTP API: Ferry's POST {base}/api/publish
// with the API key, or the peers' POST /publish whose body is the payload itself. With
// several nodes (--url) it sends to each in turn, over keep-alive connections.
type publisher struct {
	o      *options
	urls   []string
	names  [][]byte // the channels' names, JSON-quoted
	next   atomic.Uint64
	client *http.Client
}

func newPublisher(o *options, us []*url.URL) (*publisher, error) {
	p := &publisher{o: o}
	for _, u := range us {
		if o.target == "ferry" {
			p.urls = append(p.urls, u.Scheme+"://"+u.Host+o.base+"/api/publish")
		} else {
			p.urls = append(p.urls, u.Scheme+"://"+u.Host+"/publish")
		}
	}
	for c := range max(o.channels, 1) {
		name, err := json.Marshal(channelName(o.channel, c, o.channels))
		if err != nil {
			return nil, err
		}
		p.names = append(p.names, name)
	}
	p.client = &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
			MaxIdleConnsPerHost: 128,
			MaxConnsPerHost:     128,
			IdleConnTimeout:     30 * time.Second,
		},
	}
	return p, nil
}

// publish sends one payload of phase ph to channel ch, timestamped now.
func (p *publisher) publish(ctx context.Context, ph, ch int, seq uint64, pad int) error {
	buf := make([]byte, 0, 128+pad)
	var body []byte
	tag := -1 // the channel's index goes in the payload only when there are several
	if p.o.channels > 1 {
		tag = ch
	}
	if p.o.target == "ferry" {
		buf = append(buf, `{"channel":`...)
		buf = append(buf, p.names[ch]...)
		buf = append(buf, `,"data":`...)
		buf = appendChannelPayload(buf, ph, tag, seq, time.Now().UnixNano(), pad)
		body = append(buf, '}')
	} else {
		body = appendChannelPayload(buf, ph, tag, seq, time.Now().UnixNano(), pad)
	}
	target := p.urls[int(p.next.Add(1)-1)%len(p.urls)]
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if p.o.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+p.o.apiKey)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("publish: HTTP %d: %.200s", resp.StatusCode, b)
	}
	return nil
}

func (p *publisher) close() { p.client.CloseIdleConnections() }
