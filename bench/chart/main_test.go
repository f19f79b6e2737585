package main

import (
	"bytes"
	"encoding/xml"
	"io"
	"strings"
	"testing"
)

const sample = `{"label":"ferry/websocket","scenario":"rate2","clients":10000,"connected":10000,"connect_seconds":3.2,"kib_per_conn":11.5,"steady":{"rate":2,"expected":200000,"delivered":200000,"p50_ms":50,"p99_ms":90,"server_cpu_us_per_delivery":9.5},"burst":{"expected":2000000,"delivered":2000000,"deliveries_per_sec":1234567,"server_cpu_us_per_delivery":2.1}}
{"label":"ferry/websocket","scenario":"rate10","clients":10000,"connected":10000,"steady":{"rate":10,"expected":2000000,"delivered":1999990,"lost":10,"p50_ms":60,"p99_ms":120}}
{"label":"ferry/websocket","scenario":"scale","clients":1000,"connected":1000,"steady":{"rate":2,"expected":20000,"delivered":20000,"p99_ms":12}}
{"label":"ferry/websocket","scenario":"stall","clients":10000,"stalled":1,"connected":10000,"steady":{"rate":2,"expected":1999800,"delivered":1999800,"p50_ms":61,"p99_ms":118}}
{"label":"socket.io/websocket","scenario":"rate2","clients":10000,"connected":9000,"kib_per_conn":15.5,"steady":{"rate":2,"expected":180000,"delivered":180000,"p50_ms":61,"p99_ms":131}}
{"label":"ferry/events","scenario":"rate2","clients":5000,"connected":5000,"connect_seconds":1.5,"kib_per_conn":9.5,"steady":{"rate":2,"expected":200000,"delivered":200000,"p50_ms":20,"p99_ms":40}}
{"label":"ferry/memory","scenario":"brokers","clients":10000,"connected":10000,"steady":{"rate":10,"expected":2000000,"delivered":2000000,"p50_ms":5,"p99_ms":20,"deliveries_per_sec":99000,"server_cpu_us_per_delivery":3.5},"burst":{"expected":2000000,"delivered":2000000,"p50_ms":300,"p99_ms":900,"deliveries_per_sec":1500000,"server_cpu_us_per_delivery":1.2},"publish_test":{"expected":50000,"delivered":50000,"publishes_per_sec":250,"publish_p50_ms":10,"publish_p99_ms":40}}
{"label":"ferry/redis","scenario":"brokers","nodes":2,"channels":1000,"clients":10000,"connected":10000,"steady":{"rate":10,"expected":2000000,"delivered":1999000,"lost":1000,"p50_ms":7,"p99_ms":30,"deliveries_per_sec":98000,"publishes_per_sec":9500,"skipped":1000,"server_cpu_us_per_delivery":9,"server_procs":[{"pid":1,"name":"ferry","cpu_percent":40,"cpu_us_per_delivery":4},{"pid":2,"name":"ferry","cpu_percent":35,"cpu_us_per_delivery":3.5},{"pid":3,"name":"redis-server","cpu_percent":15,"cpu_us_per_delivery":1.5}]},"publish_test":{"expected":80000,"delivered":80000,"publishes_per_sec":8000,"publish_p50_ms":1.5,"publish_p99_ms":6}}
{"label":"ferry/events","scenario":"dashboard","clients":19900,"connected":19900,"disconnected":0,"rss_trace":{"every_ms":1000,"first_kib":204800,"last_kib":205824,"max_kib":209920,"samples_kib":[204800,209920,205824]},"steady":{"rate":1,"published":60,"expected":1194000,"delivered":1194000,"p50_ms":30,"p99_ms":80}}
`

func TestTableAndChart(t *testing.T) {
	rs, err := readResults(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	var md bytes.Buffer
	writeTable(&md, rs)
	writeDashboard(&md, rs)
	writeBrokers(&md, rs)
	for _, want := range []string{
		"| ferry/websocket | 10000 | 11.5 | 3.2 | 50.0 / 90.0 | 60.0 / 120 | 1235 k | 9.50 / – / 2.10 | 10 (0.00%) |",
		"| socket.io/websocket | 9000 of 10000 | 15.5 |",
		"| ferry/websocket | 10000 | 1 | 61.0 / 118 | 50.0 / 90.0 | 0 |",
		"| ferry/events | 5000 | 9.5 | 1.5 | 20.0 / 40.0 | – | – | – / – / – | 0 |",
		"| ferry/events | 19900 | 1.00 | 60 | 30.0 / 80.0 | 0 | 200.0 / 201.0 / 205.0 | 0 |",
		"| ferry/memory | 1 | 1 | 10000 | 5.00 / 20.0 | 99 k | – | 300 / 900 | 1500 k | 250 (10.0 / 40.0) | 3.50 / 1.20 | – | 0 |",
		"| ferry/redis | 2 | 1000 | 10000 | 7.00 / 30.0 | 98 k | 9500 (1000) | – | – | 8000 (1.50 / 6.00) | 9.00 / – | ferry 7.50 (75%), redis-server 1.50 (15%) | 1000 (0.05%) |",
	} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, md.String())
		}
	}
	data, order := series(rs)
	if len(order) != 3 || len(data["ferry/websocket"]) != 2 || len(data["ferry/events"]) != 1 || data["ferry/websocket"][0].x != 1000 {
		t.Errorf("series: %v %v", order, data)
	}
	var svg bytes.Buffer
	if err := writeSVG(&svg, rs, "p99 <at> 2 msg/s"); err != nil {
		t.Fatal(err)
	}
	d := xml.NewDecoder(&svg)
	for {
		if _, err := d.Token(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("chart is not well-formed XML: %v", err)
		}
	}
}

func TestDashboardAlone(t *testing.T) {
	rs, err := readResults(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	var alone []result
	for _, r := range rs {
		if r.Scenario == "dashboard" {
			alone = append(alone, r)
		}
	}
	var md bytes.Buffer
	writeTable(&md, alone)
	if md.Len() != 0 {
		t.Errorf("a main table with no rows:\n%s", md.String())
	}
	writeDashboard(&md, alone)
	if !strings.Contains(md.String(), "| ferry/events | 19900 |") {
		t.Errorf("no dashboard row:\n%s", md.String())
	}
}

func TestNiceCeil(t *testing.T) {
	for in, want := range map[float64]float64{0: 1, 7: 10, 10: 10, 11: 20, 230: 500, 10000: 10000, 0.3: 0.5} {
		if got := niceCeil(in); got != want {
			t.Errorf("niceCeil(%v) = %v, want %v", in, got, want)
		}
	}
}
