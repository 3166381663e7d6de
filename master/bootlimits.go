package master

import (
	"net"
	"sync"
	"time"
)

// Limits of the bootstrap endpoint, which anyone who reaches bootstrap_addr can use. A
// download of the binary (tens of MB) takes seconds on a datacenter network; a client that
// stalls is cut off after bootstrapWriteTimeout, and the connections it may hold are bounded,
// so stalled or slow clients cannot take the master's file descriptors.
const (
	bootstrapReadHeaderTimeout = 5 * time.Second
	bootstrapReadTimeout       = 10 * time.Second
	bootstrapWriteTimeout      = 5 * time.Minute
	bootstrapIdleTimeout       = 30 * time.Second
	bootstrapMaxHeaderBytes    = 8 << 10
	bootstrapMaxConns          = 128
	bootstrapMaxConnsPerSource = 8
)

// limitListener closes at once a connection over its total or per-source limit. (net/http's
// Serve already retries a failed Accept with a backoff, so the listener survives EMFILE.)
type limitListener struct {
	net.Listener
	max, perSource int

	mu    sync.Mutex
	n     int
	bySrc map[string]int
}

func newLimitListener(l net.Listener, max, perSource int) *limitListener {
	return &limitListener{Listener: l, max: max, perSource: perSource, bySrc: map[string]int{}}
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := c.RemoteAddr().String()
		if h, _, err := net.SplitHostPort(src); err == nil {
			src = h
		}
		l.mu.Lock()
		if l.n >= l.max || l.bySrc[src] >= l.perSource {
			l.mu.Unlock()
			c.Close()
			continue
		}
		l.n++
		l.bySrc[src]++
		l.mu.Unlock()
		return &limitConn{Conn: c, l: l, src: src}, nil
	}
}

type limitConn struct {
	net.Conn
	l    *limitListener
	src  string
	once sync.Once
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		c.l.n--
		if c.l.bySrc[c.src]--; c.l.bySrc[c.src] == 0 {
			delete(c.l.bySrc, c.src)
		}
		c.l.mu.Unlock()
	})
	return err
}
