package master

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/brinecm/brine/internal/zmtp"
)

// Limits of the bootstrap endpoint, which anyone who reaches bootstrap_addr can use. A
// download of the binary (tens of MB) takes seconds on a datacenter network; a client that
// stalls is cut off after bootstrapWriteTimeout, the connections it may hold are bounded, and
// when they are all taken the slowest gives its place to a new one (limitListener), so stalled
// or slow clients can take neither the master's file descriptors nor the droplets' downloads.
const (
	bootstrapReadHeaderTimeout = 5 * time.Second
	bootstrapReadTimeout       = 10 * time.Second
	bootstrapWriteTimeout      = 5 * time.Minute
	bootstrapIdleTimeout       = 30 * time.Second
	bootstrapMaxHeaderBytes    = 8 << 10
	bootstrapMaxConns          = 128
	bootstrapMaxConnsPerSource = 8
)

// limitListener bounds the connections it hands out, in all and per source address (an IPv6
// /64 is one source). A connection over its source's limit is closed at once. When all are
// taken, the new connection takes the place of the one that has received the least per second
// of its life (see slowest; a connection that has not sent its request yet has received nothing):
// a droplet downloads the binary in seconds, so the ones that hold a place for long are the
// clients that read slowly or not at all, and holding every place would take an attacker as
// much bandwidth as every droplet's downloads together. (net/http's Serve already retries a
// failed Accept with a backoff, so the listener survives EMFILE.)
type limitListener struct {
	net.Listener
	max, perSource int

	mu      sync.Mutex
	n       int
	bySrc   map[string]int
	conns   map[*limitConn]struct{}
	Evicted atomic.Int64 // connections closed to make room for a new one
}

// bootstrapEvictAge: a connection's rate is counted over this at least.
const bootstrapEvictAge = time.Second

func newLimitListener(l net.Listener, max, perSource int) *limitListener {
	return &limitListener{Listener: l, max: max, perSource: perSource, bySrc: map[string]int{},
		conns: map[*limitConn]struct{}{}}
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := zmtp.SourceOf(c.RemoteAddr()) // an IPv6 host's whole /64 is one source
		l.mu.Lock()
		var victim *limitConn
		if l.n >= l.max && l.bySrc[src] < l.perSource {
			victim = l.slowest(time.Now())
			if victim != nil {
				l.forget(victim)
			}
		}
		if l.n >= l.max || l.bySrc[src] >= l.perSource {
			l.mu.Unlock()
			c.Close()
			continue
		}
		lc := &limitConn{Conn: c, l: l, src: src, start: time.Now()}
		l.n++
		l.bySrc[src]++
		l.conns[lc] = struct{}{}
		l.mu.Unlock()
		if victim != nil {
			l.Evicted.Add(1)
			victim.Conn.Close()
		}
		return lc, nil
	}
}

// slowest returns the connection that has received the fewest bytes per second of its life,
// a life counted as bootstrapEvictAge at least (a young connection is not judged on its first
// moments, nor spared for its youth), the oldest of those that tie; nil if there is none.
// Called with l.mu held; O(connections), which are few.
func (l *limitListener) slowest(now time.Time) *limitConn {
	var worst *limitConn
	worstRate := 0.0
	for c := range l.conns {
		age := max(now.Sub(c.start), bootstrapEvictAge)
		rate := float64(c.sent.Load()) / age.Seconds()
		if worst == nil || rate < worstRate || (rate == worstRate && c.start.Before(worst.start)) {
			worst, worstRate = c, rate
		}
	}
	return worst
}

// forget gives back c's place, once. Called with l.mu held.
func (l *limitListener) forget(c *limitConn) {
	if c.gone {
		return
	}
	c.gone = true
	delete(l.conns, c)
	l.n--
	if l.bySrc[c.src]--; l.bySrc[c.src] == 0 {
		delete(l.bySrc, c.src)
	}
}

type limitConn struct {
	net.Conn
	l     *limitListener
	src   string
	start time.Time
	sent  atomic.Int64 // bytes written to the client
	gone  bool         // its place was given back; guarded by l.mu
}

func (c *limitConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.sent.Add(int64(n))
	return n, err
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.l.mu.Lock()
	c.l.forget(c)
	c.l.mu.Unlock()
	return err
}
