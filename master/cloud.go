package master

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
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
	"github.com/brinecm/brine/control"
	"github.com/brinecm/brine/internal/minionbin"
	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/pki"
	"github.com/brinecm/brine/states"
)

// BootstrapInfo is what a new droplet needs to become a minion of this master (the cloud
// package's type).
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

// bootstrapServer serves the minion binary over plain HTTP at GET /brine-minion (and its hex
// sha256 at GET /brine-minion.sha256), nothing else: brine-minion beside the master's own binary
// (as `make build` and the Debian package put it), else the master's binary itself, which is
// brine-minion when installed under that name (minionbin.Beside). Plain HTTP is enough: the
// droplet's user_data pins the sha256 and refuses any other file, so a tampered download is
// refused, not run.
type bootstrapServer struct {
	f       *os.File // the running executable, opened once: the inode the sha256 was taken of
	size    int64
	sha     string
	modTime time.Time
	ln      net.Listener
	srv     *http.Server
	done    chan struct{}
}

// bootstrapPath is the minion binary's URL path on the bootstrap endpoint.
const bootstrapPath = "/" + minionbin.Name

// startBootstrap opens the minion binary, hashes it once and starts serving it on
// bootstrap_addr. It does nothing when bootstrap_addr is empty.
func (m *Master) startBootstrap() error {
	if m.cfg.BootstrapAddr == "" {
		return nil
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("bootstrap endpoint: find own binary: %w", err)
	}
	exe = minionbin.Beside(exe)
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
	m.log.Info("bootstrap endpoint serving the minion binary", "addr", ln.Addr().String(), "binary", exe, "sha256", b.sha, "bytes", n)
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
	if r.URL.Path != bootstrapPath && r.URL.Path != bootstrapPath+".sha256" {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if r.URL.Path == bootstrapPath+".sha256" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, b.sha+"  "+minionbin.Name+"\n")
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("X-Brine-Sha256", b.sha)
	http.ServeContent(w, r, minionbin.Name, b.modTime, io.NewSectionReader(b.f, 0, b.size))
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
		BinaryURL:         "http://" + net.JoinHostPort(host, bport) + bootstrapPath,
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

// ctlBootstrap serves the control op bootstrap.
func (m *Master) ctlBootstrap(context.Context, control.None, func(Event)) (control.BootstrapInfo, error) {
	info, err := m.Bootstrap()
	return control.BootstrapInfo(info), err
}

// ctlWaitEnrolled serves the control op wait-enrolled: it blocks until the minion is enrolled,
// the request's timeout passes or the CLI hangs up.
func (m *Master) ctlWaitEnrolled(ctx context.Context, req control.WaitEnrolledRequest, _ func(Event)) (control.None, error) {
	if req.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, req.Timeout)
		defer cancel()
	}
	if err := m.WaitEnrolled(ctx, req.Minion); err != nil {
		return none, fmt.Errorf("minion %s: %w", req.Minion, err)
	}
	return none, nil
}

// ctlProvision serves the control op provision: the events of one apply of a bundle to one new
// minion, by id.
func (m *Master) ctlProvision(ctx context.Context, req control.ProvisionRequest, emit func(Event)) (control.None, error) {
	if !pki.ValidID(req.Minion) {
		return none, fmt.Errorf("invalid minion id %q", req.Minion)
	}
	b, err := states.UnmarshalBundle(req.Bundle)
	if err != nil {
		return none, err
	}
	spec := JobSpec{Kind: wire.JobApply, Target: req.Minion, Minions: []string{req.Minion}, Bundle: b,
		Timeout: req.Timeout, Vars: req.Vars, VarFiles: req.VarFiles}
	_, err = m.Run(ctx, spec, emit)
	return none, err
}
