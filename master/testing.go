package master

import (
	"context"
	"log/slog"
	"os"
	"time"

	"github.com/brinecm/brine/control"
	"github.com/brinecm/brine/internal/jobstore"
	"github.com/brinecm/brine/internal/tb"
)

// TestMaster starts a master in process on loopback with random ports, a short heartbeat and
// its own temporary data dir; opts adjust the config first. It stops when the test ends.
func TestMaster(t tb.TB, opts ...func(*Config)) *Master {
	t.Helper()
	// A short directory: unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "brm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg := Config{DataDir: dir, PublishAddr: "127.0.0.1:0", RequestAddr: "127.0.0.1:0", Heartbeat: "200ms"}
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.fill(); err != nil {
		t.Fatal(err)
	}
	logger := cfg.testLog
	if logger == nil && os.Getenv("BRINE_TEST_LOG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	m, err := New(cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		m.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// Client returns a control client for this master.
func (m *Master) Client() *control.Client { return &control.Client{Path: m.cfg.ControlSocket} }

// Published returns what the master publishes from now on, each message as its topic and its
// envelope: what an observer on the publish port's network path sees, whichever minions the
// messages are for. (The port itself sends a subscriber only its own minion's topics, once it
// has shown its session's credential.) A message the channel has no room for is dropped; the
// channel is closed when the test ends.
func (m *Master) Published(t tb.TB) <-chan [][]byte {
	ch := make(chan [][]byte, 1024)
	m.pubMu.Lock()
	m.taps = append(m.taps, ch)
	m.pubMu.Unlock()
	t.Cleanup(func() {
		m.pubMu.Lock()
		defer m.pubMu.Unlock()
		for i, c := range m.taps {
			if c == ch {
				m.taps = append(m.taps[:i], m.taps[i+1:]...)
				close(ch)
				return
			}
		}
	})
	return ch
}

// HoldSubscriptions is a TestMaster option: no subscriber is admitted to the publish port until
// release is closed, as if the subscriptions were slow to arrive.
func HoldSubscriptions(release <-chan struct{}) func(*Config) {
	return func(c *Config) { c.admitGate = release }
}

// PresenceLease is a TestMaster option: presence leases last d, renewed every d/3.
func PresenceLease(d time.Duration) func(*Config) { return func(c *Config) { c.presenceLease = d } }

// HistoryBytes is a TestMaster option: the job history is bounded to n bytes (job_history_mb
// counts MiB, at least MinJobHistoryMB; a test fills less).
func HistoryBytes(n int64) func(*Config) { return func(c *Config) { c.historyBytes = n } }

// RecordReturn stores r in the job history without telling anyone: what a master that died
// before its notification went out leaves behind.
func (m *Master) RecordReturn(r jobstore.Return) error {
	_, err := m.store.AddReturn(r)
	return err
}

// PruneHistory prunes the job history now, as the master does in the background.
func (m *Master) PruneHistory() { m.pruneHistory() }

// FileLimit is a TestMaster option: the master takes n for its file descriptor limit (each
// port then holds MinionsForFileLimit(n) connections).
func FileLimit(n uint64) func(*Config) { return func(c *Config) { c.fileLimit = n } }

// LogTo is a TestMaster option: the master logs to l.
func LogTo(l *slog.Logger) func(*Config) { return func(c *Config) { c.testLog = l } }

// FactsRate is a TestMaster option: each minion may make perSecond facts reports a second, in
// bursts of burst (30 at once, then one every 2 s in production). A burst under 1 takes none.
func FactsRate(perSecond, burst float64) func(*Config) {
	return func(c *Config) { c.factsRate, c.factsBurst = perSecond, burst }
}

// LogEvery is a TestMaster option: the log lines peers can cause at the rate of their requests
// are written at most once per key every d (garbageLogEvery in production).
func LogEvery(d time.Duration) func(*Config) { return func(c *Config) { c.logEvery = d } }
