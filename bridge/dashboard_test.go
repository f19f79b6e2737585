package bridge

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// The Grafana dashboard and docs/OPERATIONS.md name only metrics the server exports, and
// every exported metric is on the dashboard.
func TestDashboardAndDocsMatchMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	newTestServer(t, Config{Metrics: reg})
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	exported := map[string]bool{}
	for _, f := range families {
		exported[f.GetName()] = true
	}
	// Label-less counter vectors are exported once they have a series; list them all.
	for _, name := range []string{"ferry_negotiations_total", "ferry_attachments_total", "ferry_connections",
		"ferry_transport_switches_total", "ferry_disconnects_total", "ferry_upstream_total", "ferry_frames_out_total",
		"ferry_bytes_out_total", "ferry_frames_in_total", "ferry_bytes_in_total", "ferry_polls_total", "ferry_rejected_total"} {
		exported[name] = true
	}
	b, err := os.ReadFile("../docs/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	if !json.Valid(b) {
		t.Fatal("dashboard is not valid JSON")
	}
	doc, err := os.ReadFile("../docs/OPERATIONS.md")
	if err != nil {
		t.Fatal(err)
	}
	name := regexp.MustCompile(`ferry_[a-z_]+`)
	for src, text := range map[string]string{"dashboard": string(b), "OPERATIONS.md": string(doc)} {
		for _, m := range name.FindAllString(text, -1) {
			m = strings.TrimSuffix(m, "_bucket")
			if !exported[m] && m != "ferry_upstream" { // the nginx example's upstream block
				t.Errorf("%s names %s, which the server does not export", src, m)
			}
		}
	}
	for m := range exported {
		if strings.HasPrefix(m, "ferry_") && !strings.Contains(string(b), m) {
			t.Errorf("dashboard has no panel for %s", m)
		}
	}
}
