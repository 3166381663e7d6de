package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"
)

// Server defaults.
const (
	// DefaultMaxConns bounds the connections served at once. At the bound, a new connection
	// closes the one that has been silent longest among those that have not sent their whole
	// request, once it has been silent for IdleAfter; until then, or when every connection is
	// past its request (serving a job or a wait), new ones wait in the listen queue.
	DefaultMaxConns = 64
	// IdleAfter is how long a connection that has not sent its whole request must have sent
	// nothing before it may be closed to make room.
	IdleAfter = time.Second
	// DefaultReadTimeout is how long a connection has to send its whole request.
	DefaultReadTimeout = 30 * time.Second
	// DefaultWriteTimeout is how long one reply line may wait for the CLI to read it.
	DefaultWriteTimeout = time.Minute
	// DefaultRequestBudget bounds the bytes of all the requests being read or served at once
	// (MaxConns connections of MaxBundleRequest each would be 12.5 GiB). A request waits for
	// room until its read timeout, then fails with a clear error.
	DefaultRequestBudget = 512 << 20
)

// maxBeforeOp bounds a request until its op is known.
const maxBeforeOp = 64 << 10

// Handler serves one op: it may stream Events with emit (job ops do), then returns the op's
// response or an error. ctx ends when the CLI hangs up or the server stops.
type Handler[Req, Resp any] func(ctx context.Context, req Req, emit func(Event)) (Resp, error)

// Server serves the ops registered with Handle, one request a connection. The master makes the
// listener (the socket's permissions are its business) and calls Serve.
type Server struct {
	// MaxConns, ReadTimeout, WriteTimeout and RequestBudget: 0 is the default above.
	MaxConns      int
	ReadTimeout   time.Duration
	WriteTimeout  time.Duration
	RequestBudget int64
	// ConnContext, when set, derives each request's context from its connection (the master
	// records who started a job from the socket peer's uid).
	ConnContext func(ctx context.Context, c net.Conn) context.Context
	Log         *slog.Logger

	handlers map[string]handler

	budget *semaphore.Weighted // RequestBudget

	mu    sync.Mutex
	conns map[*conn]struct{}
	free  chan struct{} // signalled when a connection ends
	wg    sync.WaitGroup
}

// handler is a Handler with its types erased: decode reads its own request from dec and
// returns the call that serves it.
type handler struct {
	maxRequest int64
	decode     func(dec *json.Decoder) (func(ctx context.Context, emit func(Event)) (any, error), error)
}

// Handle registers h as the handler of op; every Handle comes before Serve.
func Handle[Req, Resp any](s *Server, op Op[Req, Resp], h Handler[Req, Resp]) {
	if s.handlers == nil {
		s.handlers = map[string]handler{}
	}
	if _, dup := s.handlers[op.Name]; dup {
		panic("control: op " + op.Name + " registered twice")
	}
	s.handlers[op.Name] = handler{
		maxRequest: op.maxRequest(),
		decode: func(dec *json.Decoder) (func(context.Context, func(Event)) (any, error), error) {
			var req Req
			if err := readBody(dec, &req); err != nil {
				return nil, err
			}
			return func(ctx context.Context, emit func(Event)) (any, error) { return h(ctx, req, emit) }, nil
		},
	}
}

// badRequest is a request the server could not read; the connection is closed after it.
type badRequest struct {
	op  string
	err error
}

func (b badRequest) Error() string {
	if b.op == "" {
		return "bad control request: " + b.err.Error()
	}
	return "bad control request for op " + b.op + ": " + b.err.Error()
}

// conn is one connection and whether its request has arrived.
type conn struct {
	net.Conn
	heard   atomic.Int64 // when it was accepted or last sent something, unix ns
	reading bool         // still reading the request: may be evicted (Server.mu)
	evicted bool         // closed to make room: its request, even if read, is not served (Server.mu)
}

func (c *conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.heard.Store(time.Now().UnixNano())
	}
	return n, err
}

// Serve accepts connections on l until ctx ends or l is closed, then waits for the
// connections it serves to end (their contexts are cancelled).
func (s *Server) Serve(ctx context.Context, l net.Listener) {
	defer s.wg.Wait()
	s.mu.Lock()
	s.conns = map[*conn]struct{}{}
	s.free = make(chan struct{}, 1)
	s.mu.Unlock()
	budget := s.RequestBudget
	if budget <= 0 {
		budget = DefaultRequestBudget
	}
	s.budget = semaphore.NewWeighted(budget)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	defer s.closeAll()
	for {
		nc, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if !s.makeRoom(ctx) {
			nc.Close()
			return
		}
		c := &conn{Conn: nc, reading: true}
		c.heard.Store(time.Now().UnixNano())
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.drop(c)
			s.handle(ctx, c)
		}()
	}
}

// makeRoom returns once fewer than MaxConns connections are open: at the bound it closes the
// connection silent longest among those still reading their request, once silent for
// IdleAfter, or else waits for one to end (meanwhile new connections wait in the listen queue).
// It returns false when ctx ended first.
func (s *Server) makeRoom(ctx context.Context) bool {
	max := s.MaxConns
	if max <= 0 {
		max = DefaultMaxConns
	}
	for {
		s.mu.Lock()
		if len(s.conns) < max {
			s.mu.Unlock()
			return true
		}
		var idlest *conn
		for c := range s.conns {
			if c.reading && (idlest == nil || c.heard.Load() < idlest.heard.Load()) {
				idlest = c
			}
		}
		var retry *time.Timer
		if idlest != nil {
			silent := time.Since(time.Unix(0, idlest.heard.Load()))
			if silent >= IdleAfter {
				delete(s.conns, idlest)
				idlest.evicted = true
				s.mu.Unlock()
				idlest.Close()
				s.logger().Warn("control socket: closed a connection that sent no request, to make room",
					"max_connections", max, "silent", silent.Round(time.Millisecond))
				return true
			}
			retry = time.NewTimer(IdleAfter - silent)
		} else {
			retry = time.NewTimer(time.Hour) // only a connection that ends makes room
		}
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			retry.Stop()
			return false
		case <-s.free:
		case <-retry.C:
		}
		retry.Stop()
	}
}

// closeAll closes the connections still reading their request; the others end with their
// context.
func (s *Server) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.reading {
			c.Close()
		}
	}
}

func (s *Server) drop(c *conn) {
	c.Close()
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	select {
	case s.free <- struct{}{}:
	default:
	}
}

func (s *Server) logger() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.New(slog.DiscardHandler)
}

func (s *Server) handle(ctx context.Context, c *conn) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wt := s.WriteTimeout
	if wt <= 0 {
		wt = DefaultWriteTimeout
	}
	var mu sync.Mutex
	enc := json.NewEncoder(c)
	broken := false
	send := func(r reply) {
		mu.Lock()
		defer mu.Unlock()
		if broken {
			return
		}
		_ = c.SetWriteDeadline(time.Now().Add(wt))
		if err := enc.Encode(r); err != nil {
			broken = true // the CLI is gone or reads nothing: stop waiting on its behalf
			cancel()
		}
	}
	fail := func(err error) { send(reply{Kind: kindError, Error: err.Error()}) }

	rt := s.ReadTimeout
	if rt <= 0 {
		rt = DefaultReadTimeout
	}
	_ = c.SetReadDeadline(time.Now().Add(rt))
	// The request's bytes are held from the budget until it has been served: its decoded body
	// (a bundle) lives that long.
	readCtx, readDone := context.WithTimeout(ctx, rt)
	defer readDone()
	lr := &limitedReader{r: c, max: maxBeforeOp, budget: s.budget, ctx: readCtx}
	defer lr.release()
	dec := json.NewDecoder(lr)
	name, err := readOpName(dec)
	if err != nil {
		fail(badRequest{err: readError(err, rt, lr.max)})
		return
	}
	h, ok := s.handlers[name]
	if !ok {
		fail(fmt.Errorf("unknown control op %q", name))
		return
	}
	lr.max = h.maxRequest
	call, err := h.decode(dec)
	if err != nil {
		fail(badRequest{name, readError(err, rt, lr.max)})
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	s.mu.Lock()
	c.reading = false
	evicted := c.evicted
	s.mu.Unlock()
	if evicted {
		return
	}
	if s.ConnContext != nil {
		ctx = s.ConnContext(ctx, c.Conn)
	}
	// A CLI that goes away (Ctrl-C) cancels what it waits for; it sends nothing after its
	// request, so anything but white space ends the request too.
	hungUp := make(chan struct{})
	go func() {
		defer close(hungUp)
		defer cancel()
		buf := make([]byte, 512)
		for {
			n, err := c.Read(buf)
			if err != nil || len(bytes.TrimSpace(buf[:n])) > 0 {
				return
			}
		}
	}()
	defer func() { c.Close(); <-hungUp }()
	resp, err := call(ctx, func(ev Event) { send(reply{Kind: kindEvent, Event: &ev}) })
	if err != nil {
		fail(err)
		return
	}
	raw, err := json.Marshal(resp)
	if err != nil {
		fail(err)
		return
	}
	send(reply{Kind: kindResult, Result: raw})
}

// readError makes a request read error say what went wrong.
func readError(err error, timeout time.Duration, max int64) error {
	var ne net.Error
	switch {
	case errors.Is(err, ErrTooLarge):
		return fmt.Errorf("%w: more than %d bytes", ErrTooLarge, max)
	case errors.Is(err, errBudget):
		return err
	case errors.As(err, &ne) && ne.Timeout():
		return fmt.Errorf("the request did not arrive within %s", timeout)
	}
	return err
}
