package minion

import (
	"context"
	"log/slog"
	"os"
	"time"

	"github.com/brinecm/brine/internal/tb"
)

// TestMinion starts a minion with id in process against a master's publish and request
// addresses, with short timers and its own temporary data dir. opts adjust the config before it
// starts (a token, groups, a pinned fingerprint). The minion stops when the test ends.
func TestMinion(t tb.TB, pubAddr, reqAddr, id string, opts ...func(*Config)) *Minion {
	t.Helper()
	cfg := Config{
		Master:     "127.0.0.1",
		ID:         id,
		DataDir:    t.TempDir(),
		Heartbeat:  "200ms",
		MaxBackoff: "300ms",
		FactsFunc: func() map[string]any {
			return map[string]any{"os": "linux", "hostname": id, "arch": "amd64"}
		},
	}
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.Fill(); err != nil {
		t.Fatal(err)
	}
	cfg.SetAddrs(pubAddr, reqAddr)
	var logger *slog.Logger
	if os.Getenv("BRINE_TEST_LOG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	m, err := New(cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("minion %s did not stop", id)
		}
	})
	return m
}

// DataDir returns the minion's data dir.
func (m *Minion) DataDir() string { return m.cfg.DataDir }
