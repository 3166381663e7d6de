package master

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/brinecm/brine/pki"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestMinionsForFileLimit(t *testing.T) {
	for _, c := range []struct {
		limit uint64
		want  int
	}{{0, 0}, {512, 0}, {1024, 256}, {20000, 9744}, {65536, 32512}} {
		if got := MinionsForFileLimit(c.limit); got != c.want {
			t.Errorf("MinionsForFileLimit(%d) = %d, want %d", c.limit, got, c.want)
		}
	}
}

// A master whose file limit cannot hold its accepted minions says so at start, with the
// numbers; one whose limit holds them does not.
func TestFileLimitWarning(t *testing.T) {
	const accepted = 3
	for _, c := range []struct {
		limit uint64
		warn  bool
	}{{fdReserve + fdsPerMinion*accepted - 1, true}, {fdReserve + fdsPerMinion*accepted, false}} {
		var logs syncBuffer
		cfg := Config{DataDir: t.TempDir(), PublishAddr: "127.0.0.1:0", RequestAddr: "127.0.0.1:0", fileLimit: c.limit}
		if err := cfg.fill(); err != nil {
			t.Fatal(err)
		}
		m, err := New(cfg, slog.New(slog.NewTextHandler(&logs, nil)))
		if err != nil {
			t.Fatal(err)
		}
		for i := range accepted {
			k, err := pki.GenerateKeyPair()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := m.Keys().Present(pki.Presentation{ID: string(rune('a' + i)), Key: k.Pub, Source: "operator"}, true, nil); err != nil {
				t.Fatal(err)
			}
		}
		// A pending key does not count: only accepted minions may hold sessions.
		k, _ := pki.GenerateKeyPair()
		if _, err := m.Keys().Present(pki.Presentation{ID: "pending", Key: k.Pub, Source: "operator"}, false, nil); err != nil {
			t.Fatal(err)
		}
		if err := m.Start(t.Context()); err != nil {
			m.Close()
			t.Fatal(err)
		}
		m.Close()
		out := logs.String()
		warned := strings.Contains(out, "file descriptor limit cannot hold")
		if warned != c.warn {
			t.Fatalf("limit %d, %d accepted: warned %v, want %v; log:\n%s", c.limit, accepted, warned, c.warn, out)
		}
		if c.warn && !strings.Contains(out, "accepted=3") {
			t.Fatalf("the warning does not give the numbers:\n%s", out)
		}
		if !strings.Contains(out, "master started") || !strings.Contains(out, "minions_max=") {
			t.Fatalf("the start line does not give the limit:\n%s", out)
		}
	}
}

// The master raises its soft file limit to the hard one (Go's runtime does at start; the
// master does not rely on it).
func TestRaiseFileLimit(t *testing.T) {
	var orig syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &orig); err != nil {
		t.Fatal(err)
	}
	if orig.Max < 1100 {
		t.Skipf("hard file limit %d: too low to lower the soft one for the test", orig.Max)
	}
	t.Cleanup(func() { _ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &orig) })
	low := orig
	low.Cur = orig.Max - 1
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	got, err := raiseFileLimit()
	if err != nil || got != orig.Max {
		t.Fatalf("raiseFileLimit = %d, %v; want the hard limit %d", got, err, orig.Max)
	}
	var now syscall.Rlimit
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &now)
	if now.Cur != orig.Max {
		t.Fatalf("soft limit %d after raising, want %d", now.Cur, orig.Max)
	}
}
