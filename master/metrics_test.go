package master_test

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/brinecm/brine/internal/tb"
	"github.com/brinecm/brine/master"
)

// scrape GETs the master's /metrics and parses it as Prometheus does.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// value returns the value of the series of family name whose labels include want ("k=v,...").
func value(fams map[string]*dto.MetricFamily, name, want string) (float64, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for _, kv := range strings.Split(want, ",") {
			if k, v, ok := strings.Cut(kv, "="); ok && labels[k] != v {
				match = false
			}
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

// The metrics endpoint of a real master with real minions over TCP: connected minions, jobs by
// kind and outcome, return latency, refused authentications by reason, publish drops.
func TestMetricsScrape(t *testing.T) {
	m := master.TestMaster(t, func(c *master.Config) { c.MetricsAddr = "127.0.0.1:0" })
	addr := m.MetricsAddr()
	if addr == "" {
		t.Fatal("no metrics address")
	}
	acceptedMinion(t, m, "m1", nil)
	acceptedMinion(t, m, "m2", nil)
	// A minion whose key stays pending: its authentications are refused as "pending".
	startMinion(t, m, "p1")

	res, err := m.Run(t.Context(), master.JobSpec{Kind: "ping", Target: "m*", Minions: []string{"m1", "m2"}, Timeout: 30 * time.Second}, nil)
	if err != nil || res.Failed() {
		t.Fatalf("ping: %+v %v", res, err)
	}
	// An apply that fails on m1: the file's parent is a regular file.
	blocker := filepath.Join(t.TempDir(), "blocker")
	if err := os.WriteFile(blocker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	b := bundle(t, map[string]string{"main.hcl": fmt.Sprintf(`file %q { content = "x" }`, blocker+"/x")})
	if _, err := m.Run(t.Context(), master.JobSpec{Kind: "apply", Target: "m1", Minions: []string{"m1"}, Bundle: b, Timeout: 30 * time.Second}, nil); err != nil {
		t.Fatal(err)
	}

	var fams map[string]*dto.MetricFamily
	tb.WaitFor(t, 20*time.Second, "the pending minion's refused auth counted", func() bool {
		fams = scrape(t, addr)
		v, _ := value(fams, "brine_auth_failures_total", "reason=pending")
		return v >= 1
	})
	for _, c := range []struct {
		name, labels string
		min, max     float64
	}{
		{"brine_connected_minions", "", 2, 2},
		{"brine_jobs_total", "kind=ping,outcome=succeeded", 1, 1},
		{"brine_jobs_total", "kind=apply,outcome=failed", 1, 1},
		{"brine_job_minion_results_total", "kind=ping,outcome=succeeded", 2, 2},
		{"brine_job_minion_results_total", "kind=apply,outcome=failed", 1, 1},
		{"brine_return_latency_seconds", "kind=ping", 1, 2}, // returns that raced the watch are not timed
		{"brine_auth_failures_total", "reason=signature", 0, 0},
		{"brine_publish_dropped_total", "", 0, 0},
		{"brine_publish_subscribers_refused_total", "", 0, 0},
		{"brine_publish_subscribers_unadmitted_total", "", 0, 0}, // the real minions showed their credentials
		{"brine_request_throttled_total", "", 0, 0},
		{"brine_connections_evicted_total", "", 0, 0},
	} {
		v, ok := value(fams, c.name, c.labels)
		if !ok || v < c.min || v > c.max {
			t.Errorf("%s{%s} = %v (present %v), want %v..%v", c.name, c.labels, v, ok, c.min, c.max)
		}
	}
	if _, ok := fams["go_goroutines"]; !ok {
		t.Error("no Go runtime metrics")
	}
	// Nothing but GET /metrics.
	resp, err := http.Post("http://"+addr+"/metrics", "text/plain", nil)
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("POST /metrics: %s", resp.Status)
		}
	}
	if resp, err := http.Get("http://" + addr + "/"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET /: %s", resp.Status)
		}
	}
}

// A master whose metrics_addr cannot be bound does not start.
func TestMetricsAddrInUse(t *testing.T) {
	m := master.TestMaster(t, func(c *master.Config) { c.MetricsAddr = "127.0.0.1:0" })
	cfg := m.Config()
	dir, err := os.MkdirTemp("", "brmx") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg.DataDir, cfg.ControlSocket, cfg.SecretsFile = dir, filepath.Join(dir, "m.sock"), filepath.Join(dir, "secrets.hcl")
	cfg.PublishAddr, cfg.RequestAddr, cfg.MetricsAddr = "127.0.0.1:0", "127.0.0.1:0", m.MetricsAddr()
	m2, err := master.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	if err := m2.Start(t.Context()); err == nil || !strings.Contains(err.Error(), "metrics_addr") {
		t.Fatalf("start with the metrics address in use: %v", err)
	}
}

// The metrics endpoint holds up against clients that do not behave: a connection that never
// finishes its request is closed, connections over the per-source limit are closed at once, and
// a scrape still works.
func TestMetricsHostileClients(t *testing.T) {
	m := master.TestMaster(t, func(c *master.Config) { c.MetricsAddr = "127.0.0.1:0" })
	addr := m.MetricsAddr()
	var conns []net.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for range 8 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("GET /metrics HTTP/1.1\r\nHost: x\r\n")) // never ends the header
		conns = append(conns, c)
	}
	// The ninth from the same source is closed without an answer, though its request is whole.
	extra, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	extra.Write([]byte("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"))
	extra.SetReadDeadline(time.Now().Add(30 * time.Second))
	if n, err := extra.Read(make([]byte, 64)); err == nil || n != 0 {
		t.Fatalf("a connection over the per-source limit was served: %d %v", n, err)
	}
	// The stalled ones are closed after the header timeout (5 s; generous bound for a loaded host).
	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(60 * time.Second))
		buf := make([]byte, 4096)
		for {
			_, err := c.Read(buf)
			if err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatalf("stalled connection %d still open after 60 s", i)
				}
				break
			}
		}
	}
	fams := scrape(t, addr)
	if _, ok := fams["brine_connected_minions"]; !ok {
		t.Fatal("no scrape after the stalled clients went")
	}
}
