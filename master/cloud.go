package master

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/brinecm/brine/cloud"
	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/pki"
	"github.com/brinecm/brine/states"
)

// BootstrapInfo is what a new droplet needs to become a minion of this master (the cloud
// package's type, so that CloudMaster implements cloud.Master).
type BootstrapInfo = cloud.BootstrapInfo

// cloudState is the master's side of cloud provisioning: the bootstrap HTTP endpoint and when
// each minion last reported facts, which is how WaitEnrolled knows a minion is listening.
type cloudState struct {
	boot *bootstrapServer // nil unless bootstrap_addr is set

	mu      sync.Mutex           // guards factsAt
	factsAt map[string]time.Time // minion id -> last facts received over a session
}

// noteFacts records that minion id reported facts over an authenticated session. A minion
// sends facts after it subscribed to the PUB socket, so from then on it receives jobs.
func (c *cloudState) noteFacts(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.factsAt == nil {
		c.factsAt = map[string]time.Time{}
	}
	c.factsAt[id] = time.Now().UTC()
}

func (c *cloudState) lastFacts(id string) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.factsAt[id]
}

// bootstrapServer serves the master's own binary over plain HTTP at GET /brine (and its hex
// sha256 at GET /brine.sha256), nothing else. Plain HTTP is enough: the droplet's user_data pins
// the sha256 and refuses any other file, so a tampered download is refused, not run.
type bootstrapServer struct {
	f       *os.File // the running executable, opened once: the inode the sha256 was taken of
	size    int64
	sha     string
	modTime time.Time
	ln      net.Listener
	srv     *http.Server
	done    chan struct{}
}

// startBootstrap opens the running executable, hashes it once and starts serving it on
// bootstrap_addr. It does nothing when bootstrap_addr is empty.
func (m *Master) startBootstrap() error {
	if m.cfg.BootstrapAddr == "" {
		return nil
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("bootstrap endpoint: find own binary: %w", err)
	}
	f, err := os.Open(exe)
	if err != nil {
		return fmt.Errorf("bootstrap endpoint: %w", err)
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		f.Close()
		return fmt.Errorf("bootstrap endpoint: hash %s: %w", exe, err)
	}
	fi, _ := f.Stat()
	ln, err := net.Listen("tcp", m.cfg.BootstrapAddr)
	if err != nil {
		f.Close()
		return fmt.Errorf("bootstrap endpoint %s: %w", m.cfg.BootstrapAddr, err)
	}
	b := &bootstrapServer{f: f, size: n, sha: hex.EncodeToString(h.Sum(nil)), ln: ln, done: make(chan struct{})}
	if fi != nil {
		b.modTime = fi.ModTime()
	}
	b.srv = &http.Server{Handler: b, ReadHeaderTimeout: bootstrapReadHeaderTimeout, ReadTimeout: bootstrapReadTimeout,
		WriteTimeout: bootstrapWriteTimeout, IdleTimeout: bootstrapIdleTimeout, MaxHeaderBytes: bootstrapMaxHeaderBytes,
		ErrorLog: quietLogger()}
	go func() {
		defer close(b.done)
		_ = b.srv.Serve(newLimitListener(ln, bootstrapMaxConns, bootstrapMaxConnsPerSource))
	}()
	m.cloud.boot = b
	m.log.Info("bootstrap endpoint serving this binary", "addr", ln.Addr().String(), "sha256", b.sha, "bytes", n)
	return nil
}

// stopBootstrap stops the endpoint and waits for its server goroutine.
func (m *Master) stopBootstrap() {
	b := m.cloud.boot
	if b == nil {
		return
	}
	_ = b.srv.Close()
	<-b.done
	b.f.Close()
}

// BootstrapAddr is the address the bootstrap endpoint listens on, "" when it is off.
func (m *Master) BootstrapAddr() string {
	if m.cloud.boot == nil {
		return ""
	}
	return m.cloud.boot.ln.Addr().String()
}

func (b *bootstrapServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/brine" && r.URL.Path != "/brine.sha256" {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if r.URL.Path == "/brine.sha256" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, b.sha+"  brine\n")
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("X-Brine-Sha256", b.sha)
	http.ServeContent(w, r, "brine", b.modTime, io.NewSectionReader(b.f, 0, b.size))
}

// Bootstrap describes how a new droplet fetches this binary and reaches this master.
func (m *Master) Bootstrap() (BootstrapInfo, error) {
	b := m.cloud.boot
	if b == nil {
		return BootstrapInfo{}, errors.New("the master has no bootstrap endpoint: set bootstrap_addr in master.hcl (see docs/master.md) and restart it")
	}
	_, bport, _ := net.SplitHostPort(b.ln.Addr().String())
	host := m.cfg.AdvertiseAddr
	if host == "" {
		h, _, _ := net.SplitHostPort(m.cfg.BootstrapAddr)
		if ip := net.ParseIP(h); h == "" || (ip != nil && ip.IsUnspecified()) {
			return BootstrapInfo{}, fmt.Errorf("bootstrap_addr %s listens on every address: set advertise_addr in master.hcl to the address droplets reach the master at", m.cfg.BootstrapAddr)
		}
		host = h
	}
	_, rport, err := net.SplitHostPort(m.RequestAddr())
	if err != nil {
		return BootstrapInfo{}, err
	}
	_, pport, err := net.SplitHostPort(m.PublishAddr())
	if err != nil {
		return BootstrapInfo{}, err
	}
	rp, _ := strconv.Atoi(rport)
	pp, _ := strconv.Atoi(pport)
	return BootstrapInfo{
		BinaryURL:         "http://" + net.JoinHostPort(host, bport) + "/brine",
		SHA256:            b.sha,
		MasterAddr:        host,
		PublishPort:       pp,
		RequestPort:       rp,
		MasterFingerprint: m.key.Pub.Fingerprint(),
	}, nil
}

// WaitEnrolled blocks until minion id is accepted and has reported facts over a session since
// its key was last accepted (so it is subscribed and receives jobs), or until ctx ends.
func (m *Master) WaitEnrolled(ctx context.Context, id string) error {
	if !pki.ValidID(id) {
		return fmt.Errorf("invalid minion id %q", id)
	}
	t := time.NewTicker(25 * time.Millisecond)
	defer t.Stop()
	for {
		if rec, ok := m.keys.Get(id); ok && rec.State == pki.StateAccepted {
			if f := m.cloud.lastFacts(id); !f.IsZero() && !f.Before(rec.Updated) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// cloudOp answers the control ops of cloud provisioning; handled is false for other ops.
//
//	bootstrap      -> Bootstrap
//	wait-enrolled  Target = minion id -> done once enrolled (blocks; the CLI hanging up ends it)
//	converge       Target = minion id, Bundle -> the events of one apply to that minion only
func (s *controlServer) cloudOp(ctx context.Context, req ControlRequest, send func(ControlResponse)) (handled bool, err error) {
	m := s.m
	switch req.Op {
	case "bootstrap":
		info, err := m.Bootstrap()
		if err != nil {
			return true, err
		}
		send(ControlResponse{Event: Event{Event: "done"}, Bootstrap: &info})
		return true, nil
	case "wait-enrolled":
		if req.Timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, req.Timeout)
			defer cancel()
		}
		if err := m.WaitEnrolled(ctx, req.Target); err != nil {
			return true, fmt.Errorf("minion %s: %w", req.Target, err)
		}
		send(ControlResponse{Event: Event{Event: "done"}})
		return true, nil
	case "converge":
		if !pki.ValidID(req.Target) {
			return true, fmt.Errorf("invalid minion id %q", req.Target)
		}
		b, err := states.UnmarshalBundle(req.Bundle)
		if err != nil {
			return true, err
		}
		spec := JobSpec{Kind: wire.JobApply, Target: req.Target, Minions: []string{req.Target}, Bundle: b,
			Timeout: req.Timeout, Vars: req.Vars, VarFiles: req.VarFiles}
		_, err = m.Run(ctx, spec, func(ev Event) { send(ControlResponse{Event: ev}) })
		return true, err
	}
	return false, nil
}

// CloudMaster is the cloud.Master of `brine cloud`: it reaches a running master over its
// control socket. Enrolment tokens, bootstrap info and the enrolment wait come from the master;
// Converge reads each bundle from BundleDir/NAME here, as `brine apply` does, and sends it.
type CloudMaster struct {
	Client *Client
	// BundleDir is where bundles named by profiles live (cloud.hcl's bundle_dir).
	BundleDir string
}

var _ cloud.Master = (*CloudMaster)(nil)

// CreateToken asks the master for a single-use enrolment token for minionID alone.
func (c *CloudMaster) CreateToken(ctx context.Context, minionID string, groups []string, ttl time.Duration) (string, error) {
	if !pki.ValidID(minionID) {
		return "", fmt.Errorf("invalid minion id %q", minionID)
	}
	r, err := c.Client.One(ctx, ControlRequest{Op: "token", ID: minionID, Groups: groups, TTL: ttl})
	if err != nil {
		return "", err
	}
	if r.Token == "" {
		return "", errors.New("the master returned no token")
	}
	return r.Token, nil
}

// Bootstrap asks the master for its bootstrap endpoint, address and fingerprint.
func (c *CloudMaster) Bootstrap(ctx context.Context) (cloud.BootstrapInfo, error) {
	r, err := c.Client.One(ctx, ControlRequest{Op: "bootstrap"})
	if err != nil {
		return cloud.BootstrapInfo{}, err
	}
	if r.Bootstrap == nil {
		return cloud.BootstrapInfo{}, errors.New("the master does not serve bootstrap information (an older master?)")
	}
	return *r.Bootstrap, nil
}

// WaitEnrolled blocks until the master reports minionID enrolled and listening, or ctx ends
// (then it returns ctx.Err()).
func (c *CloudMaster) WaitEnrolled(ctx context.Context, minionID string) error {
	_, err := c.Client.One(ctx, ControlRequest{Op: "wait-enrolled", Target: minionID})
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// Converge applies each bundle, in order, to minionID alone, and fails on the first bundle
// that is invalid, has a failed resource, or gets no return before ctx's deadline (or the
// master's job_timeout when ctx has none).
func (c *CloudMaster) Converge(ctx context.Context, minionID string, bundles []string) error {
	for _, name := range bundles {
		dir, err := cloud.BundlePath(c.BundleDir, name)
		if err != nil {
			return err
		}
		b, err := states.ReadBundle(dir)
		if err != nil {
			return fmt.Errorf("bundle %s: %w", name, err)
		}
		req := ControlRequest{Op: "converge", Target: minionID, Bundle: b.Marshal()}
		if dl, ok := ctx.Deadline(); ok {
			req.Timeout = time.Until(dl)
		}
		var ret *wire.Return
		var missing bool
		var diags string
		err = c.Client.Do(ctx, req, func(r ControlResponse) {
			switch r.Event.Event {
			case "return":
				ret = r.Return
			case "missing":
				missing = true
			case "invalid":
				diags = r.Diagnostics
			}
		})
		switch {
		case diags != "":
			return fmt.Errorf("bundle %s is invalid:\n%s", name, diags)
		case err != nil:
			return fmt.Errorf("bundle %s: %w", name, err)
		case missing || ret == nil:
			return fmt.Errorf("bundle %s: no return from %s", name, minionID)
		case !ret.Success:
			return fmt.Errorf("bundle %s failed: %s", name, returnFailure(*ret))
		}
	}
	return nil
}

// returnFailure says in one line why a return is not a success.
func returnFailure(r wire.Return) string {
	if r.Error != "" {
		return r.Error
	}
	var rep states.Report
	if err := json.Unmarshal(r.Report, &rep); err == nil {
		var failed []string
		for _, res := range rep.Results {
			if res.Status == states.StatusFailed {
				failed = append(failed, res.Address+": "+res.Error)
			}
		}
		if len(failed) > 0 {
			return fmt.Sprintf("%d resource(s) failed: %v", len(failed), failed)
		}
	}
	return "the minion reported a failure"
}
