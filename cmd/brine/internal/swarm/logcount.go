package swarm

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
)

// LogCounter is a slog.Handler that counts records by message and error instead of printing
// them: thousands of minions logging each reconnect would drown the benchmark's output, but how
// many reconnected, and why, is what explains a slow run.
type LogCounter struct {
	Level slog.Level
	mu    sync.Mutex // guards n
	n     map[string]int
}

// Enabled implements slog.Handler.
func (c *LogCounter) Enabled(_ context.Context, l slog.Level) bool { return l >= c.Level }

// Handle implements slog.Handler.
func (c *LogCounter) Handle(_ context.Context, r slog.Record) error {
	key := r.Message
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "err" {
			key += ": " + a.Value.String()
		}
		return true
	})
	c.mu.Lock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[key]++
	c.mu.Unlock()
	return nil
}

// WithAttrs implements slog.Handler.
func (c *LogCounter) WithAttrs([]slog.Attr) slog.Handler { return c }

// WithGroup implements slog.Handler.
func (c *LogCounter) WithGroup(string) slog.Handler { return c }

// Take returns the counts so far, most frequent first, and resets them.
func (c *LogCounter) Take() string {
	c.mu.Lock()
	n := c.n
	c.n = nil
	c.mu.Unlock()
	type kv struct {
		k string
		v int
	}
	var l []kv
	for k, v := range n {
		l = append(l, kv{k, v})
	}
	sort.Slice(l, func(i, j int) bool { return l[i].v > l[j].v })
	var b strings.Builder
	for _, e := range l {
		fmt.Fprintf(&b, "%6d  %s\n", e.v, e.k)
	}
	return b.String()
}
