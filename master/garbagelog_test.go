package master_test

import (
	"bytes"
	"context"
	"io"
	"log"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"

	"github.com/brinecm/brine/internal/tb"
	"github.com/brinecm/brine/internal/zmtp"
	"github.com/brinecm/brine/master"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Garbage from a peer without a key is logged once per kind and minute, not once per frame:
// the rate limit was never in effect (its interval was zero), and a flood of bad frames wrote
// a line each (725 in 3 s in BenchmarkFloodSeparateMaster, more with more sources).
func TestGarbageLogIsRateLimited(t *testing.T) {
	var logs lockedBuffer
	cfg, diags := master.LoadConfig("", t.TempDir())
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	cfg.PublishAddr, cfg.RequestAddr = "127.0.0.1:0", "127.0.0.1:0"
	m, err := master.New(cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		m.Close()
		t.Fatal(err)
	}
	defer m.Close()
	const frames = 60
	d := zmq4.NewDealer(context.Background(), zmq4.WithLogger(log.New(io.Discard, "", 0)), zmq4.WithDialerMaxRetries(0), zmq4.WithTimeout(time.Second))
	defer d.Close()
	if err := d.Dial(zmtp.Endpoint(m.RequestAddr(), 1<<20)); err != nil {
		t.Fatal(err)
	}
	for range frames {
		if err := d.Send(zmq4.NewMsg([]byte("junk, not a brine message"))); err != nil {
			t.Fatal(err)
		}
	}
	// The master has read them all when the last one is logged or counted: a second kind of
	// garbage, sent after them, is logged once they are done.
	if err := d.Send(zmq4.NewMsgFrom([]byte("a"), []byte("b"))); err != nil {
		t.Fatal(err)
	}
	tb.WaitFor(t, 30*time.Second, "the frames read", func() bool { return strings.Contains(logs.String(), "several frames") })
	if n := strings.Count(logs.String(), "not brine's"); n != 1 {
		t.Fatalf("%d log lines for %d bad frames; want 1:\n%s", n, frames, logs.String())
	}
}
