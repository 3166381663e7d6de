// Package dosim is a DigitalOcean API v2 simulator for tests and demos.
//
// It speaks the API's JSON shapes, status codes and error bodies for the endpoints brine's cloud
// package uses: droplets (create one or many, get, list with pagination and tag, name and type
// filters, delete, delete by tag), droplet actions, actions, account and SSH keys, regions, sizes,
// images, domains and domain records. It checks the bearer token and its scopes, sends the
// RateLimit-* headers, enforces DigitalOcean's request limits, moves droplets from "new" to
// "active" after a configurable delay, and lets a test inject 429s and 5xx errors. A Booter turns
// each droplet into something real (a testbed host) and runs its user_data there.
//
// Where the real API is less kind than a naive simulator, dosim follows the real API by default
// (see realism.go for the list and the spec files each point follows): deletes are asynchronous,
// sizes differ per region, regions may be given as a prefix or omitted, tags keep the
// capitalisation they were first made with, CNAME data must end with a dot and comes back without
// it, a record's TTL applies to its whole record set, GPU droplets are listed only with type=gpus.
// The faults that the real API shows only sometimes (droplets that are never deleted, creates that
// fail after their 202, 5xx answers to requests that took effect, late listings and late tags,
// locked droplets) are off unless an Options field or a Fault turns them on, so tests stay
// deterministic.
//
// A Server is an http.Handler, so httptest.NewServer(dosim.New(opts)) works; Start listens on
// 127.0.0.1 by itself.
package dosim

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// SimulatorHeader is the response header by which the simulator marks itself, on every
// response. Its value says what becomes of a droplet once it is "active": BootNone (nothing
// runs its user_data, so it never enrols with a master), BootExternal (a test plays the droplet
// itself), or the Booter's kind (BootTestbed for testbedboot). cloud.Client refuses to create
// droplets that never boot instead of waiting for them to enrol.
const SimulatorHeader = "X-Brine-Simulator"

// What SimulatorHeader says about booting.
const (
	BootNone     = "boot=none"
	BootExternal = "boot=external"
	BootTestbed  = "boot=testbed"
)

// BootKinder is implemented by a Booter that names what it boots droplets as (SimulatorHeader's
// value, e.g. BootTestbed); a Booter without it is announced as "boot=booter".
type BootKinder interface {
	BootKind() string
}

// Booter makes a simulated droplet real. Boot is called once per droplet, after the boot delay,
// in its own goroutine; it returns the droplet's public IPv4 address. It must return promptly
// when ctx is cancelled (the Server is closing). Until Boot returns the droplet stays "new"; if
// Boot fails it stays "new" for good and its create action is "errored", as a droplet that never
// came up. Destroy is called when a booted droplet is deleted and must release everything Boot
// made; it may block.
type Booter interface {
	Boot(ctx context.Context, d Droplet, userData string) (ip string, err error)
	Destroy(name string)
}

// Options configure a Server. The zero value is a usable simulator with a random token.
type Options struct {
	// Token is the bearer token the API accepts; empty means a random one (see Server.Token).
	Token string
	// BootDelay is how long a droplet stays "new" before it boots.
	BootDelay time.Duration
	// Booter, when set, boots each droplet for real and supplies its public address.
	Booter Booter
	// ExternalBoot says that droplets are booted outside the simulator: without a Booter, a
	// test reads their user_data and plays the droplet itself. The simulator then announces
	// BootExternal instead of BootNone (see SimulatorHeader).
	ExternalBoot bool
	// Stuck, when set, names droplets that never leave "new" (a hung hypervisor).
	Stuck func(name string) bool
	// DropletLimit is the account's droplet limit; creates beyond it fail with 422 as on
	// DigitalOcean. Zero means 25.
	DropletLimit int
	// PerMinute and PerHour are the request limits (DigitalOcean: 250 and 5,000). Zero means
	// DigitalOcean's value; a negative value disables that limit.
	PerMinute, PerHour int
	// Logger receives one line per request; nil discards.
	Logger *slog.Logger

	// DeleteDelay is how long a deleted droplet is still listed, with its status unchanged and
	// its "destroy" action in progress, before it 404s. Zero means DefaultDeleteDelay; negative
	// removes it at once (the old, kinder behaviour).
	DeleteDelay time.Duration
	// NeverDeleted names droplets whose delete is accepted (204) but that stay: their "destroy"
	// action errors after DeleteDelay and the droplet stays listed.
	NeverDeleted func(name string) bool
	// Locked names droplets that are locked (an event in progress, e.g. a backup): a delete
	// answers 422 and the droplet lists with "locked": true.
	Locked func(name string) bool
	// CreateErrors names droplets whose create fails after its 202: after BootDelay the create
	// action is "errored" and the droplet is gone (404, no longer listed).
	CreateErrors func(name string) bool
	// ListDelay keeps a new droplet out of list responses for this long after its create; a GET
	// by id finds it (the listing is eventually consistent).
	ListDelay time.Duration
	// TagDelay applies a new droplet's tags this long after its create: until then it has no
	// tags and a tag_name filter misses it.
	TagDelay time.Duration
	// Scopes are the token's custom scopes ("droplet:read", "domain:update", ...); a request
	// whose endpoint needs a scope the token lacks gets a 403 that, as on DigitalOcean, does not
	// say which. Nil is a full-access token.
	Scopes []string
}

// DefaultDeleteDelay is how long a deleted droplet lingers when Options.DeleteDelay is zero.
const DefaultDeleteDelay = 500 * time.Millisecond

// Fault is an injected failure: the next Times requests matching Method (empty: any) and a path
// starting with Path (empty: any) get Status with DigitalOcean's error body. RetryAfter, when
// non-zero, is sent as Retry-After in whole seconds (rounded up), as DigitalOcean does on 429.
// With Committed the request is carried out first and only its answer is replaced: a 5xx to a
// droplet create that still made the droplet. With Hang no answer comes at all: the server
// waits until the client gives up (a timeout on the client's side); Status is then unused.
type Fault struct {
	Method     string
	Path       string
	Status     int
	RetryAfter time.Duration
	Times      int
	Committed  bool
	Hang       bool
}

// Server is a simulated DigitalOcean API. It is safe for concurrent use.
type Server struct {
	opts  Options
	token string
	mux   *http.ServeMux

	ctx    context.Context // cancelled by Close; owns the boot goroutines
	cancel context.CancelFunc
	wg     sync.WaitGroup // boot and destroy goroutines

	ln     net.Listener
	srv    *http.Server
	urlStr string

	mu sync.Mutex // guards every field below
	// state
	nextID   int
	droplets map[int]*droplet
	actions  map[int]*Action
	keys     []Key
	domains  map[string]*domain
	limit    int
	faults   []Fault
	requests map[string]int // "METHOD /path" -> count, for tests
	minute   []time.Time    // request times within the last minute
	hourFrom time.Time
	hourN    int
	tags     map[string]string // lower-case name -> the capitalisation it was made with
}

type droplet struct {
	Droplet
	userData string
	actionID int
	booted   bool
	gpu      bool
	deleting bool      // a delete was accepted; the droplet lingers until DeleteDelay passes
	listAt   time.Time // ListDelay: not listed before
	lateTags []string  // TagDelay: applied at tagsAt
	tagsAt   time.Time
}

type domain struct {
	Domain
	records []Record
}

// New returns a simulator; it does not listen until Start (or use it as an http.Handler).
func New(opts Options) *Server {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		opts:     opts,
		token:    opts.Token,
		ctx:      ctx,
		cancel:   cancel,
		nextID:   3164444,
		droplets: map[int]*droplet{},
		actions:  map[int]*Action{},
		domains:  map[string]*domain{},
		limit:    opts.DropletLimit,
		requests: map[string]int{},
		hourFrom: time.Now(),
		tags:     map[string]string{},
	}
	if s.token == "" {
		s.token = "dop_v1_" + randHex(32)
	}
	if s.limit == 0 {
		s.limit = 25
	}
	if s.opts.PerMinute == 0 {
		s.opts.PerMinute = 250
	}
	if s.opts.PerHour == 0 {
		s.opts.PerHour = 5000
	}
	if s.opts.Logger == nil {
		s.opts.Logger = slog.New(slog.DiscardHandler)
	}
	if s.opts.DeleteDelay == 0 {
		s.opts.DeleteDelay = DefaultDeleteDelay
	}
	s.keys = []Key{{ID: 512189, Name: "brine-operator", Fingerprint: "3b:16:bf:e4:8b:00:8b:b8:59:8c:a9:d3:f0:19:45:fa",
		PublicKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBrineSimulatorKeyDoNotUse operator@brine"}}
	s.routes()
	return s
}

// Token returns the bearer token the simulator accepts.
func (s *Server) Token() string { return s.token }

// Start listens on a free port of 127.0.0.1 and serves until Close. It returns the base URL
// (also available from URL) to give godo.SetBaseURL.
func (s *Server) Start() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("dosim: listen: %w", err)
	}
	s.ln = ln
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	s.urlStr = "http://" + ln.Addr().String() + "/"
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = s.srv.Serve(ln)
	}()
	return s.urlStr, nil
}

// URL is the base URL after Start, "" before.
func (s *Server) URL() string { return s.urlStr }

// Close stops the listener, cancels pending boots and waits for every goroutine the Server
// started, including Booter.Destroy calls.
func (s *Server) Close() error {
	s.cancel()
	var err error
	if s.srv != nil {
		err = s.srv.Close()
	}
	s.wg.Wait()
	return err
}

// Inject queues a fault; faults are consumed in the order they were injected.
func (s *Server) Inject(f Fault) {
	if f.Times <= 0 {
		f.Times = 1
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, f)
}

// SetDropletLimit changes the account's droplet limit.
func (s *Server) SetDropletLimit(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.limit = n
}

// Droplets returns a snapshot of every droplet, in creation order.
func (s *Server) Droplets() []Droplet {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settleLocked(time.Now())
	return s.sortedDroplets(func(*droplet) bool { return true })
}

// UserData returns the user_data a droplet was created with.
func (s *Server) UserData(name string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range s.droplets {
		if d.Name == name {
			return d.userData, true
		}
	}
	return "", false
}

// Requests counts the requests so far whose method is method (empty: any) and whose path starts
// with pathPrefix. Requests rejected by auth or rate limits count too.
func (s *Server) Requests(method, pathPrefix string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, c := range s.requests {
		m, p, _ := strings.Cut(k, " ")
		if (method == "" || m == method) && strings.HasPrefix(p, pathPrefix) {
			n += c
		}
	}
	return n
}

// ServeHTTP serves the API: authentication, rate limits and injected faults first, then the
// endpoint.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	reqID := randHex(8)
	w.Header().Set("X-Request-Id", reqID)
	w.Header().Set(SimulatorHeader, s.bootKind())
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	r.Body = http.MaxBytesReader(w, r.Body, 1<<20)

	status, retryAfter, fault, f := s.admit(r, w.Header())
	s.opts.Logger.Debug("dosim request", "method", r.Method, "path", r.URL.Path, "fault", status)
	if fault && f.Committed && s.authorized(r) {
		// The request takes effect; its answer is lost and replaced by the fault's.
		s.serveAuthorized(discardWriter{h: http.Header{}}, r)
	}
	if fault && f.Hang {
		select {
		case <-r.Context().Done():
		case <-s.ctx.Done():
		}
		return
	}
	if fault {
		if retryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int((retryAfter+time.Second-1)/time.Second)))
		}
		switch {
		case status == http.StatusTooManyRequests:
			writeError(w, status, "too_many_requests", "API Rate limit exceeded.")
		case status >= 500:
			writeError(w, status, "server_error", "Server was unable to give you a response.")
		default:
			writeError(w, status, http.StatusText(status), http.StatusText(status))
		}
		return
	}
	if !s.authorized(r) {
		writeError(w, http.StatusUnauthorized, "unauthorized", "Unable to authenticate you.")
		return
	}
	s.serveAuthorized(w, r)
}

// serveAuthorized checks the token's scopes and serves the endpoint.
func (s *Server) serveAuthorized(w http.ResponseWriter, r *http.Request) {
	if s.opts.Scopes != nil {
		_, pattern := s.mux.Handler(r)
		for _, need := range scopesFor(pattern, r) {
			if !s.hasScope(need) {
				// DigitalOcean's 403 does not name the scope that was missing.
				writeError(w, http.StatusForbidden, "forbidden", "You are not authorized to perform this operation")
				return
			}
		}
	}
	s.mux.ServeHTTP(w, r)
}

// discardWriter is where the answer of a request goes whose injected fault says it was carried
// out but its answer lost.
type discardWriter struct{ h http.Header }

func (d discardWriter) Header() http.Header         { return d.h }
func (d discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d discardWriter) WriteHeader(int)             {}

// admit counts the request, sets the rate-limit headers, and decides whether a rate limit or an
// injected fault answers it instead of the endpoint.
func (s *Server) admit(r *http.Request, h http.Header) (status int, retryAfter time.Duration, fault bool, f Fault) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests[r.Method+" "+r.URL.Path]++
	if now.Sub(s.hourFrom) >= time.Hour {
		s.hourFrom, s.hourN = now, 0
	}
	s.hourN++
	cut := 0
	for cut < len(s.minute) && now.Sub(s.minute[cut]) >= time.Minute {
		cut++
	}
	s.minute = append(s.minute[cut:], now)

	limit := s.opts.PerHour
	if limit > 0 {
		h.Set("RateLimit-Limit", strconv.Itoa(limit))
		h.Set("RateLimit-Remaining", strconv.Itoa(max(0, limit-s.hourN)))
		h.Set("RateLimit-Reset", strconv.FormatInt(s.hourFrom.Add(time.Hour).Unix(), 10))
		if s.hourN > limit {
			return http.StatusTooManyRequests, s.hourFrom.Add(time.Hour).Sub(now), true, Fault{}
		}
	}
	if s.opts.PerMinute > 0 && len(s.minute) > s.opts.PerMinute {
		return http.StatusTooManyRequests, time.Minute - now.Sub(s.minute[0]), true, Fault{}
	}
	for i := range s.faults {
		ff := &s.faults[i]
		if (ff.Method == "" || ff.Method == r.Method) && strings.HasPrefix(r.URL.Path, ff.Path) {
			ff.Times--
			got := *ff
			if ff.Times <= 0 {
				s.faults = append(s.faults[:i], s.faults[i+1:]...)
			}
			return got.Status, got.RetryAfter, true, got
		}
	}
	return 0, 0, false, Fault{}
}

// bootKind is SimulatorHeader's value.
func (s *Server) bootKind() string {
	switch b := s.opts.Booter; {
	case b != nil:
		if k, ok := b.(BootKinder); ok {
			return k.BootKind()
		}
		return "boot=booter"
	case s.opts.ExternalBoot:
		return BootExternal
	}
	return BootNone
}

func (s *Server) authorized(r *http.Request) bool {
	auth := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(auth, "Bearer ")
	return ok && subtleEqual(tok, s.token)
}

func subtleEqual(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	var v byte
	for i := 0; i < len(a); i++ {
		v |= a[i] ^ b[i]
	}
	return v == 0
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, id, msg string) {
	writeJSON(w, status, apiError{ID: id, Message: msg, RequestID: w.Header().Get("X-Request-Id")})
}

func notFound(w http.ResponseWriter) {
	writeError(w, http.StatusNotFound, "not_found", "The resource you were accessing could not be found.")
}

func unprocessable(w http.ResponseWriter, msg string) {
	writeError(w, http.StatusUnprocessableEntity, "unprocessable_entity", msg)
}

func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, "request_entity_too_large", "The request body is too large.")
			return false
		}
		writeError(w, http.StatusBadRequest, "bad_request", "The request body is not valid JSON.")
		return false
	}
	return true
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func nowString(t time.Time) string { return t.UTC().Format(time.RFC3339) }
