package master

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/pki"
	"github.com/brinecm/brine/states"
)

// The control socket speaks JSON lines: one ControlRequest from the CLI, then a stream of
// ControlResponse lines from the master, the last with Event "done" or "error".
const maxControlRequest = 200 << 20

// ControlRequest is one operator command.
type ControlRequest struct {
	Op       string            `json:"op"` // apply | ping | keys | token | jobs | job | facts | finger
	Target   string            `json:"target,omitempty"`
	Bundle   []byte            `json:"bundle,omitempty"` // states.Bundle.Marshal()
	DryRun   bool              `json:"dry_run,omitempty"`
	Timeout  time.Duration     `json:"timeout,omitempty"`
	Vars     map[string]string `json:"vars,omitempty"`
	VarFiles map[string][]byte `json:"var_files,omitempty"`
	Action   string            `json:"action,omitempty"` // keys: list | accept | reject | delete | groups | accept-tinc
	Glob     string            `json:"glob,omitempty"`
	ID       string            `json:"id,omitempty"`     // token: the id or id glob it enrols; "" any
	Finger   string            `json:"finger,omitempty"` // keys accept: only the key with this fingerprint
	Groups   []string          `json:"groups,omitempty"`
	All      bool              `json:"all,omitempty"`
	TTL      time.Duration     `json:"ttl,omitempty"`
	JID      string            `json:"jid,omitempty"`
	Limit    int               `json:"limit,omitempty"`
	Rollout  Rollout           `json:"rollout,omitzero"`
	Network  string            `json:"network,omitempty"` // keys accept-tinc: the tinc networks (a glob)
	// Site is a states tree (states.Bundle.Marshal of the site directory) for converge, or a
	// bundle of its site.hcl alone for the groups of ping and apply; empty: the master's
	// configured site. SiteDir names it in diagnostics.
	Site    []byte `json:"site,omitempty"`
	SiteDir string `json:"site_dir,omitempty"`
	// BundleName names the bundle of apply in the job history (its directory's name).
	BundleName string `json:"bundle_name,omitempty"`
	// Command is the shell command of run.
	Command string `json:"command,omitempty"`
	// Capture are the options of capture.
	Capture *wire.CaptureSpec `json:"capture,omitempty"`
}

// KeyInfo is one key as `brine key list` shows it.
type KeyInfo struct {
	ID     string   `json:"id"`
	State  string   `json:"state"`
	Finger string   `json:"finger"`
	Groups []string `json:"groups,omitempty"`
	// Requested is what the minion's config asks for: never granted by the master.
	Requested []string  `json:"requested,omitempty"`
	Source    string    `json:"source,omitempty"` // the address the key was first presented from
	Created   time.Time `json:"created,omitzero"` // when the key was first presented
	// Address is the address the master saw the minion's last facts come from (attested).
	Address string `json:"address,omitempty"`
	// TincPending names the tinc networks whose reported key differs from the pinned one: peers()
	// keeps the pinned key until `brine key accept-tinc`.
	TincPending []string `json:"tinc_pending,omitempty"`
	// Master is the master the minion is connected to (its presence lease), "" when none.
	Master string `json:"master,omitempty"`
}

// ControlResponse is one line of the master's answer. Event carries the job events of apply and
// ping; the other fields answer the other ops.
type ControlResponse struct {
	Event
	Keys    []KeyInfo                 `json:"keys,omitempty"`
	IDs     []string                  `json:"ids,omitempty"`
	Token   string                    `json:"token,omitempty"`
	Expires time.Time                 `json:"expires,omitzero"`
	Jobs    []JobSummary              `json:"jobs,omitempty"`
	Detail  *JobDetail                `json:"detail,omitempty"`
	Facts   map[string]map[string]any `json:"facts,omitempty"`
	Finger  string                    `json:"finger,omitempty"`
	// Drift answers the op "drift" (schedule.go).
	Drift []DriftRecord `json:"drift,omitempty"`
	// Status answers the op "status" (status.go).
	Status []MinionStatus `json:"status,omitempty"`
	// Master is the answering master's name (presence leases name masters so).
	Master string `json:"master,omitempty"`
	// Store is the answering master's store health, with Status.
	Store *StoreHealth `json:"store,omitempty"`
	// Bootstrap answers the op "bootstrap" (cloud.go).
	Bootstrap *BootstrapInfo `json:"bootstrap,omitempty"`
}

type controlServer struct {
	m    *Master
	l    net.Listener
	path string
	wg   sync.WaitGroup
}

// listenControl makes the unix socket, 0600, in a directory only the master's user can enter
// (DESIGN.md invariant 7).
func listenControl(m *Master, path string) (*controlServer, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	// A directory others can write lets them replace the socket with their own, which the CLI
	// then refuses (CheckControlSocket): refuse it here first, with the fix.
	if di, err := os.Lstat(dir); err != nil {
		return nil, fmt.Errorf("control socket directory: %w", err)
	} else if di.Mode()&os.ModeSymlink != 0 || di.Mode().Perm()&0o022 != 0 || trustedOwner(di) != nil {
		return nil, fmt.Errorf("control socket directory %s is a symbolic link, not ours, or writable by group or others (mode %#o): "+
			"use a directory only the master's user can write (chmod 700 %s), or set control_socket elsewhere", dir, di.Mode().Perm(), dir)
	}
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s: another master is running", path)
	}
	_ = os.Remove(path)
	old := syscall.Umask(0o177)
	l, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	return &controlServer{m: m, l: l, path: path}, nil
}

func (s *controlServer) close() {
	s.l.Close()
	s.wg.Wait()
}

func (s *controlServer) serve(ctx context.Context) {
	for {
		c, err := s.l.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer c.Close()
			s.handle(ctx, c)
		}()
	}
}

func (s *controlServer) handle(ctx context.Context, c net.Conn) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex
	enc := json.NewEncoder(c)
	send := func(r ControlResponse) {
		mu.Lock()
		defer mu.Unlock()
		_ = enc.Encode(r)
	}
	var req ControlRequest
	dec := json.NewDecoder(bufio.NewReader(&limitedReader{r: c, n: maxControlRequest}))
	if err := dec.Decode(&req); err != nil {
		send(ControlResponse{Event: Event{Event: "error", Error: "bad control request: " + err.Error()}})
		return
	}
	if who := peerUID(c); who != "" {
		ctx = WithStartedBy(ctx, who)
	}
	// A CLI that goes away (Ctrl-C) cancels its wait; the job itself stays published.
	go func() {
		buf := make([]byte, 1)
		_, _ = c.Read(buf)
		cancel()
	}()
	if err := s.do(ctx, req, send); err != nil {
		send(ControlResponse{Event: Event{Event: "error", Error: err.Error()}})
		return
	}
}

type limitedReader struct {
	r net.Conn
	n int64
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errors.New("control request too large")
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

func (s *controlServer) do(ctx context.Context, req ControlRequest, send func(ControlResponse)) error {
	m := s.m
	// Every command reads keys, tokens or jobs: without its database a master would answer
	// from nothing (an empty key list) instead of saying it cannot (fleet.go).
	if err := m.storeLost(); err != nil {
		return err
	}
	switch req.Op {
	case "highstate":
		return s.converge(ctx, req, send)
	case "status":
		site, tree, diags, err := m.siteFor(req.Site, req.SiteDir, false)
		if err != nil {
			return err
		}
		if diags.HasErrors() {
			return siteError(tree, diags)
		}
		st, err := m.Status(ctx, req.Target, site)
		if err != nil {
			return err
		}
		h := m.StoreHealth()
		send(ControlResponse{Event: Event{Event: "done"}, Status: st, Master: m.Name(), Store: &h})
		return nil
	case "apply", "ping", "run", "capture":
		site, tree, diags, err := m.siteFor(req.Site, req.SiteDir, false)
		if err != nil {
			return err
		}
		if diags.HasErrors() {
			return siteError(tree, diags)
		}
		spec := JobSpec{Kind: wire.JobPing, Target: req.Target, Timeout: req.Timeout, DryRun: req.DryRun, Vars: req.Vars, VarFiles: req.VarFiles, Site: site}
		switch req.Op {
		case "apply":
			spec.Kind = wire.JobApply
			b, err := states.UnmarshalBundle(req.Bundle)
			if err != nil {
				return err
			}
			spec.Bundle = b
			spec.BundleName = cleanBundleName(req.BundleName)
		case "run":
			if spec, err = runSpec(spec, req.Command, m.cfg.jobTimeout); err != nil {
				return err
			}
		case "capture":
			if spec, err = captureSpec(spec, req.Capture); err != nil {
				return err
			}
		}
		ids, err := m.ResolveTargetIn(req.Target, site)
		if err != nil {
			return err
		}
		chk := m.checkTarget(req.Target, site)
		if len(ids) == 0 {
			return noMinionsError(chk)
		}
		spec.Minions = ids
		emit := func(ev Event) { send(ControlResponse{Event: ev}) }
		emitTargetCheck(chk, emit)
		if req.Rollout.Enabled() {
			_, err = m.RunRollout(ctx, spec, req.Rollout, emit)
		} else {
			_, err = m.Run(ctx, spec, emit)
		}
		return err
	case "keys":
		return s.keys(req, send)
	case "token":
		tok, t, err := m.tokens.Create(pki.TokenRequest{ID: req.ID, Groups: req.Groups, TTL: req.TTL})
		if err != nil {
			return err
		}
		send(ControlResponse{Event: Event{Event: "done"}, Token: tok, Expires: t.Expires})
		return nil
	case "jobs":
		jobs, err := m.JobsList(req.Limit)
		if err != nil {
			return err
		}
		send(ControlResponse{Event: Event{Event: "done"}, Jobs: jobs})
		return nil
	case "job":
		d, err := m.Job(req.JID)
		if err != nil {
			return fmt.Errorf("job %s: %w", req.JID, err)
		}
		send(ControlResponse{Event: Event{Event: "done"}, Detail: d})
		return nil
	case "facts":
		ids, err := m.ResolveTarget(req.Target)
		if err != nil {
			return err
		}
		if len(ids) == 0 {
			return noMinionsError(m.checkTarget(req.Target, nil))
		}
		out := map[string]map[string]any{}
		for _, id := range ids {
			out[id] = m.Facts(id)
		}
		send(ControlResponse{Event: Event{Event: "done"}, Facts: out})
		return nil
	case "drift":
		recs, err := m.Drift(req.Target, req.All)
		if err != nil {
			return err
		}
		send(ControlResponse{Event: Event{Event: "done"}, Drift: recs})
		return nil
	case "finger":
		send(ControlResponse{Event: Event{Event: "done"}, Finger: m.key.Pub.Fingerprint()})
		return nil
	}
	if handled, err := s.cloudOp(ctx, req, send); handled {
		return err
	}
	return fmt.Errorf("unknown control op %q", req.Op)
}

func (s *controlServer) keys(req ControlRequest, send func(ControlResponse)) error {
	m := s.m
	glob := req.Glob
	if glob == "" {
		glob = "*"
	}
	var ids []string
	var err error
	switch req.Action {
	case "list", "":
		if _, perr := path.Match(glob, ""); perr != nil {
			return fmt.Errorf("bad key pattern %q", glob)
		}
		var out []KeyInfo
		presence, err := m.Presence()
		if err != nil {
			m.log.Warn("could not read presence leases", "err", err)
		}
		for _, k := range m.keys.List() {
			if ok, _ := path.Match(glob, k.ID); !ok {
				continue
			}
			ki := keyInfo(k)
			a := m.attest.get(k.ID)
			ki.Address = a.Address
			for n := range a.TincPending {
				ki.TincPending = append(ki.TincPending, n)
			}
			sort.Strings(ki.TincPending)
			if k.State == pki.StateAccepted {
				ki.Master = presence[k.ID].Master
			}
			out = append(out, ki)
		}
		send(ControlResponse{Event: Event{Event: "done"}, Keys: out, Finger: m.key.Pub.Fingerprint(), Master: m.Name()})
		return nil
	case "accept":
		recs, err := m.keys.AcceptKeys(glob, req.Groups, req.All, req.Finger)
		if err != nil {
			return err
		}
		out := make([]KeyInfo, len(recs))
		for i, k := range recs {
			out[i] = keyInfo(k)
			ids = append(ids, k.ID)
			m.log.Info("minion key accepted", "minion", k.ID, "finger", k.Finger(), "source", k.Source, "groups", k.Groups)
		}
		send(ControlResponse{Event: Event{Event: "done"}, IDs: ids, Keys: out})
		return nil
	case "reject":
		ids, err = m.keys.Reject(glob)
		m.RemoveMinions(ids, false)
	case "delete":
		ids, err = m.keys.Delete(glob)
		m.RemoveMinions(ids, true)
	case "accept-tinc":
		netGlob := req.Network
		if netGlob == "" {
			netGlob = "*"
		}
		if _, perr := path.Match(netGlob, ""); perr != nil {
			return fmt.Errorf("bad network pattern %q", netGlob)
		}
		for id := range m.keys.Accepted() {
			if ok, _ := path.Match(glob, id); !ok {
				continue
			}
			nets, aerr := m.attest.acceptTinc(id, netGlob)
			if aerr != nil {
				continue // nothing pending for this one
			}
			m.log.Info("accepted a changed tinc key", "minion", id, "networks", nets)
			ids = append(ids, id)
		}
		sort.Strings(ids)
	case "groups":
		ids, err = m.keys.SetGroups(glob, req.Groups)
		for _, id := range ids {
			if f := m.Facts(id); f != nil {
				_ = m.setFacts(id, f)
			}
		}
	default:
		return fmt.Errorf("unknown key action %q", req.Action)
	}
	if err != nil {
		return err
	}
	send(ControlResponse{Event: Event{Event: "done"}, IDs: ids})
	return nil
}

// keyInfo converts a key store record.
func keyInfo(k pki.MinionKey) KeyInfo {
	return KeyInfo{ID: k.ID, State: string(k.State), Finger: k.Finger(), Groups: k.Groups, Requested: k.Requested,
		Source: k.Source, Created: k.Created}
}
