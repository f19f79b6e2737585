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
	"time"
)

// publisher publishes through the server's HTTP API: Ferry's POST {base}/api/publish
// with the API key, or the peers' POST /publish whose body is the payload itself.
type publisher struct {
	o      *options
	url    string
	client *http.Client
}

func newPublisher(o *options, u *url.URL) (*publisher, error) {
	p := &publisher{o: o, url: u.Scheme + "://" + u.Host + "/publish"}
	if o.target == "ferry" {
		p.url = u.Scheme + "://" + u.Host + o.base + "/api/publish"
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

// publish sends one payload of phase ph, timestamped now.
func (p *publisher) publish(ctx context.Context, ph int, seq uint64, pad int) error {
	buf := make([]byte, 0, 96+pad)
	var body []byte
	if p.o.target == "ferry" {
		buf = append(buf, `{"channel":`...)
		ch, _ := json.Marshal(p.o.channel)
		buf = append(buf, ch...)
		buf = append(buf, `,"data":`...)
		buf = appendPayload(buf, ph, seq, time.Now().UnixNano(), pad)
		body = append(buf, '}')
	} else {
		body = appendPayload(buf, ph, seq, time.Now().UnixNano(), pad)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(body))
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
