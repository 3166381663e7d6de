package cloud

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/digitalocean/godo"
	"golang.org/x/time/rate"
)

// DefaultRequestsPerMinute paces API requests below DigitalOcean's limit of 250 a minute,
// leaving room for the burst (see newPacer) and for other tools using the same token.
const DefaultRequestsPerMinute = 225

// DefaultAPIURL is DigitalOcean's API.
const DefaultAPIURL = "https://api.digitalocean.com/"

// ClientOptions configure a Client. Only Token is required.
type ClientOptions struct {
	Token Token
	// APIURL overrides DefaultAPIURL, e.g. with a dosim URL.
	APIURL string
	// RequestsPerMinute paces requests; zero means DefaultRequestsPerMinute, negative unpaced.
	RequestsPerMinute int
	// MaxRetries bounds the retries of one request after a 429 or a 5xx; zero means 6.
	MaxRetries int
	// BackoffBase and BackoffMax shape the jittered exponential backoff after a 5xx; zero
	// means 1s and 30s.
	BackoffBase, BackoffMax time.Duration
	// MaxRetryAfter caps how long one 429's Retry-After is honoured; zero means 2 minutes.
	MaxRetryAfter time.Duration
	// PollInterval is how often droplet status is polled while waiting for "active"; zero
	// means 3s. One poll is one list request however many droplets are waited for.
	PollInterval time.Duration
	// Logger receives retries and progress at debug/info level; nil discards. The token is
	// never logged.
	Logger *slog.Logger
	// Transport is the underlying HTTP transport; nil means a copy of http.DefaultTransport
	// that waits at most ResponseTimeout for an answer's headers.
	Transport http.RoundTripper
	// ResponseTimeout bounds the wait for an answer when Transport is nil; zero means 60s. A
	// create that times out is handled as one that failed with a 5xx: the droplet may exist.
	ResponseTimeout time.Duration
}

// Client runs brine's cloud operations against DigitalOcean through godo.
type Client struct {
	do   *godo.Client
	log  *slog.Logger
	poll time.Duration
	tr   *transport
	// Retry shaping, also used by Create for POSTs the transport will not repeat.
	backoffBase, backoffMax time.Duration
}

// NewClient returns a Client. It makes no request.
func NewClient(opts ClientOptions) (*Client, error) {
	if opts.Token.IsZero() {
		return nil, fmt.Errorf("no DigitalOcean API token: set %s or token_file in the provider block", TokenEnv)
	}
	if opts.APIURL == "" {
		opts.APIURL = DefaultAPIURL
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Transport == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.ResponseHeaderTimeout = opts.ResponseTimeout
		if tr.ResponseHeaderTimeout <= 0 {
			tr.ResponseHeaderTimeout = 60 * time.Second
		}
		opts.Transport = tr
	}
	t := &transport{
		base:          opts.Transport,
		token:         opts.Token,
		maxRetries:    opts.MaxRetries,
		backoffBase:   opts.BackoffBase,
		backoffMax:    opts.BackoffMax,
		maxRetryAfter: opts.MaxRetryAfter,
		log:           opts.Logger,
	}
	if t.maxRetries == 0 {
		t.maxRetries = 6
	}
	if t.backoffBase == 0 {
		t.backoffBase = time.Second
	}
	if t.backoffMax == 0 {
		t.backoffMax = 30 * time.Second
	}
	if t.maxRetryAfter == 0 {
		t.maxRetryAfter = 2 * time.Minute
	}
	t.limiter = newPacer(opts.RequestsPerMinute)
	// We do not use godo's WithRetryAndBackoffs: it retries POSTs after a 5xx (a droplet
	// create that may have succeeded would be sent again, making a second droplet with the
	// same name) and it replaces the HTTP client we give it.
	do, err := godo.New(&http.Client{Transport: t}, godo.SetBaseURL(opts.APIURL), godo.SetUserAgent("brine-cloud"))
	if err != nil {
		return nil, fmt.Errorf("digitalocean client: %w", err)
	}
	c := &Client{do: do, log: opts.Logger, poll: opts.PollInterval, tr: t, backoffBase: t.backoffBase, backoffMax: t.backoffMax}
	if c.poll == 0 {
		c.poll = 3 * time.Second
	}
	return c, nil
}

// Godo returns the underlying godo client, for callers that need an endpoint brine does not
// wrap. Requests through it are paced and retried like brine's own.
func (c *Client) Godo() *godo.Client { return c.do }

// newPacer is a token bucket that keeps any one-minute window under perMinute+burst requests.
// DigitalOcean allows 250 requests a minute (and 5,000 an hour); 429s under load were
// terraform-provider-digitalocean issue #546.
func newPacer(perMinute int) *rate.Limiter {
	if perMinute < 0 {
		return nil
	}
	if perMinute == 0 {
		perMinute = DefaultRequestsPerMinute
	}
	burst := max(1, min(25, 250-perMinute))
	return rate.NewLimiter(rate.Limit(float64(perMinute)/60), burst)
}

// transport authenticates, paces and retries requests to the API.
type transport struct {
	base          http.RoundTripper
	token         Token
	limiter       *rate.Limiter
	maxRetries    int
	backoffBase   time.Duration
	backoffMax    time.Duration
	maxRetryAfter time.Duration
	log           *slog.Logger
	// simulator is the last simulatorHeader the API sent (brine's simulator marks itself),
	// "" from DigitalOcean.
	simulator atomic.Pointer[string]
}

// simulatorHeader and simulatorNoBoot are how brine's DigitalOcean simulator (cloud/dosim)
// says that its droplets never run their user_data: they become "active" and nothing else.
const (
	simulatorHeader = "X-Brine-Simulator"
	simulatorNoBoot = "boot=none"
)

// errNeverBoots is Create's answer to a simulator whose droplets never boot.
var errNeverBoots = errors.New("the API is brine's DigitalOcean simulator, and its droplets never boot: " +
	"they would become \"active\" but never run their user_data, so they could never enrol with the master. " +
	"Nothing was created. Run the simulator with `brine cloud sim --boot testbed` to boot them as testbed hosts " +
	"(see docs/cloud.md), or pass --dry-run")

// simulatorNeverBoots reports whether the last response came from a simulator that says its
// droplets never boot.
func (t *transport) simulatorNeverBoots() bool {
	v := t.simulator.Load()
	return v != nil && *v == simulatorNoBoot
}

func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPut, http.MethodDelete, http.MethodOptions:
		return true
	}
	return false
}

// RoundTrip sends req, retrying a 429 (any method: DigitalOcean did not process it) after
// Retry-After, and a 5xx or a network error (idempotent methods only) after a jittered
// exponential backoff.
func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	for attempt := 0; ; attempt++ {
		if t.limiter != nil {
			if err := t.limiter.Wait(ctx); err != nil {
				// Wait says at once when its wait would pass ctx's deadline; the caller sees the
				// deadline when it comes, as it would have had the request been sent and waited
				// for (it tells "still there after the timeout" from a failure by ctx.Err).
				if _, ok := ctx.Deadline(); ok && ctx.Err() == nil {
					<-ctx.Done()
					return nil, ctx.Err()
				}
				return nil, err
			}
		}
		r := req.Clone(ctx)
		if attempt > 0 && req.Body != nil {
			if req.GetBody == nil {
				return nil, errors.New("digitalocean: cannot retry a request whose body cannot be replayed")
			}
			body, err := req.GetBody()
			if err != nil {
				return nil, err
			}
			r.Body = body
		}
		r.Header.Set("Authorization", "Bearer "+t.token.v)
		resp, err := t.base.RoundTrip(r)
		if err == nil {
			v := resp.Header.Get(simulatorHeader)
			t.simulator.Store(&v)
		}
		wait, retry := t.retryAfter(req.Method, resp, err, attempt)
		if !retry || attempt >= t.maxRetries || ctx.Err() != nil {
			if err == nil && resp.StatusCode == http.StatusForbidden {
				resp = withScopeHint(req, resp)
			}
			return resp, err
		}
		status := 0
		if resp != nil {
			status = resp.StatusCode
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
		}
		t.log.Info("digitalocean: retrying", "method", req.Method, "path", req.URL.Path,
			"status", status, "attempt", attempt+1, "wait", wait.Round(time.Millisecond))
		tm := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			tm.Stop()
			return nil, ctx.Err()
		case <-tm.C:
		}
	}
}

// retryAfter decides whether a response is retried and after how long.
func (t *transport) retryAfter(method string, resp *http.Response, err error, attempt int) (time.Duration, bool) {
	if err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return 0, false
		}
		return t.backoff(attempt), idempotent(method)
	}
	switch {
	case resp.StatusCode == http.StatusTooManyRequests:
		if s := resp.Header.Get("Retry-After"); s != "" {
			if secs, perr := strconv.Atoi(s); perr == nil && secs >= 0 {
				return min(time.Duration(secs)*time.Second, t.maxRetryAfter), true
			}
			if at, perr := http.ParseTime(s); perr == nil {
				return min(max(0, time.Until(at)), t.maxRetryAfter), true
			}
		}
		if resp.Header.Get("RateLimit-Remaining") == "0" {
			if reset, perr := strconv.ParseInt(resp.Header.Get("RateLimit-Reset"), 10, 64); perr == nil {
				return min(max(0, time.Until(time.Unix(reset, 0))), t.maxRetryAfter), true
			}
		}
		return t.backoff(attempt), true
	case resp.StatusCode >= 500 && resp.StatusCode != http.StatusNotImplemented:
		return t.backoff(attempt), idempotent(method)
	}
	return 0, false
}

// backoff is exponential with "equal jitter": half the step fixed, half random, so retries
// from parallel creates spread out but never retry at once.
func (t *transport) backoff(attempt int) time.Duration {
	return jitter(t.backoffBase, t.backoffMax, attempt)
}

func jitter(base, maxWait time.Duration, attempt int) time.Duration {
	step := base << min(attempt, 20)
	if step <= 0 || step > maxWait {
		step = maxWait
	}
	half := step / 2
	return half + rand.N(half+1)
}
