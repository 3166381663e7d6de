package master

import (
	"context"
	"fmt"
	"net"
	"os"
	"path"
	"path/filepath"
	"sort"
	"sync"
	"syscall"

	"github.com/brinecm/brine/control"
	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/pki"
	"github.com/brinecm/brine/states"
)

// The control API's data types (package control), which the master works with directly.
type (
	Event        = control.Event
	Rollout      = control.Rollout
	KeyInfo      = control.KeyInfo
	JobSummary   = control.JobSummary
	JobDetail    = control.JobDetail
	MinionStatus = control.MinionStatus
	JobOutcome   = control.JobOutcome
	DriftRecord  = control.DriftRecord
	DriftChange  = control.DriftChange
	DriftSummary = control.DriftSummary
	StoreHealth  = control.StoreHealth
)

// controlServer serves the control API (package control) on the master's unix socket.
type controlServer struct {
	m    *Master
	srv  control.Server
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
	// then refuses (control.CheckControlSocket): refuse it here first, with the fix.
	if di, err := os.Lstat(dir); err != nil {
		return nil, fmt.Errorf("control socket directory: %w", err)
	} else if di.Mode()&os.ModeSymlink != 0 || di.Mode().Perm()&0o022 != 0 || control.TrustedOwner(di) != nil {
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
	s := &controlServer{m: m, l: l, path: path}
	s.srv.Log = m.log
	s.srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		if who := peerUID(c); who != "" {
			return WithStartedBy(ctx, who)
		}
		return ctx
	}
	s.register()
	return s, nil
}

// serve serves the socket until ctx ends or close.
func (s *controlServer) serve(ctx context.Context) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.srv.Serve(ctx, s.l)
	}()
}

// close stops serving and waits for the connections being served to end.
func (s *controlServer) close() {
	s.l.Close()
	s.wg.Wait()
}

// handle registers h for op. Every command reads keys, tokens or jobs: without its database a
// master would answer from nothing (an empty key list) instead of saying it cannot (fleet.go).
func handle[Req, Resp any](m *Master, srv *control.Server, op control.Op[Req, Resp], h control.Handler[Req, Resp]) {
	control.Handle(srv, op, func(ctx context.Context, req Req, emit func(Event)) (Resp, error) {
		if err := m.storeLost(); err != nil {
			var none Resp
			return none, err
		}
		return h(ctx, req, emit)
	})
}

// register gives each op of the control API its handler.
func (s *controlServer) register() {
	m, srv := s.m, &s.srv
	handle(m, srv, control.OpPing, m.ctlPing)
	handle(m, srv, control.OpApply, m.ctlApply)
	handle(m, srv, control.OpRun, m.ctlRun)
	handle(m, srv, control.OpCapture, m.ctlCapture)
	handle(m, srv, control.OpConverge, m.ctlConverge)
	handle(m, srv, control.OpProvision, m.ctlProvision)
	// Status says what it can without its database: the store line (lost, since when, why)
	// and no minions (their keys and jobs are in the database).
	control.Handle(srv, control.OpStatus, m.ctlStatus)
	handle(m, srv, control.OpJobs, m.ctlJobs)
	handle(m, srv, control.OpJob, m.ctlJob)
	handle(m, srv, control.OpFacts, m.ctlFacts)
	handle(m, srv, control.OpDrift, m.ctlDrift)
	handle(m, srv, control.OpFinger, m.ctlFinger)
	handle(m, srv, control.OpKeyList, m.ctlKeyList)
	handle(m, srv, control.OpKeyAccept, m.ctlKeyAccept)
	handle(m, srv, control.OpKeyReject, m.ctlKeyReject)
	handle(m, srv, control.OpKeyDelete, m.ctlKeyDelete)
	handle(m, srv, control.OpKeyGroups, m.ctlKeyGroups)
	handle(m, srv, control.OpKeyAcceptTinc, m.ctlKeyAcceptTinc)
	handle(m, srv, control.OpTokenCreate, m.ctlTokenCreate)
	handle(m, srv, control.OpBootstrap, m.ctlBootstrap)
	handle(m, srv, control.OpWaitEnrolled, m.ctlWaitEnrolled)
}

// none is the response of the job ops: their events say it all.
var none control.None

func (m *Master) ctlPing(ctx context.Context, req control.PingRequest, emit func(Event)) (control.None, error) {
	return none, m.startJob(ctx, JobSpec{Kind: wire.JobPing, Target: req.Target, Timeout: req.Timeout}, req.SiteRef, Rollout{}, emit)
}

func (m *Master) ctlApply(ctx context.Context, req control.ApplyRequest, emit func(Event)) (control.None, error) {
	b, err := states.UnmarshalBundle(req.Bundle)
	if err != nil {
		return none, err
	}
	spec := JobSpec{Kind: wire.JobApply, Target: req.Target, Timeout: req.Timeout, DryRun: req.DryRun, Vars: req.Vars,
		VarFiles: req.VarFiles, Bundle: b, BundleName: cleanBundleName(req.BundleName)}
	return none, m.startJob(ctx, spec, req.SiteRef, req.Rollout, emit)
}

func (m *Master) ctlRun(ctx context.Context, req control.RunRequest, emit func(Event)) (control.None, error) {
	spec, err := runSpec(JobSpec{Kind: wire.JobPing, Target: req.Target, Timeout: req.Timeout}, req.Command, m.cfg.jobTimeout)
	if err != nil {
		return none, err
	}
	return none, m.startJob(ctx, spec, req.SiteRef, req.Rollout, emit)
}

// startJob runs spec (its target resolved with the site ref's groups), in a rollout when ro
// asks for one, streaming its events.
func (m *Master) startJob(ctx context.Context, spec JobSpec, ref control.SiteRef, ro Rollout, emit func(Event)) error {
	site, tree, diags, err := m.siteFor(ref.Site, ref.Dir, false)
	if err != nil {
		return err
	}
	if diags.HasErrors() {
		return siteError(tree, diags)
	}
	spec.Site = site
	ids, err := m.ResolveTargetIn(spec.Target, site)
	if err != nil {
		return err
	}
	chk := m.checkTarget(spec.Target, site)
	if len(ids) == 0 {
		return noMinionsError(chk)
	}
	spec.Minions = ids
	emitTargetCheck(chk, emit)
	if ro.Enabled() {
		_, err = m.RunRollout(ctx, spec, ro, emit)
	} else {
		_, err = m.Run(ctx, spec, emit)
	}
	return err
}

func (m *Master) ctlStatus(ctx context.Context, req control.StatusRequest, _ func(Event)) (control.StatusResponse, error) {
	if h := m.StoreHealth(); !h.Up {
		return control.StatusResponse{Minions: []MinionStatus{}, Master: m.Name(), Store: &h}, nil
	}
	site, tree, diags, err := m.siteFor(req.Site, req.Dir, false)
	if err != nil {
		return control.StatusResponse{}, err
	}
	if diags.HasErrors() {
		return control.StatusResponse{}, siteError(tree, diags)
	}
	st, err := m.Status(ctx, req.Target, site)
	if err != nil {
		return control.StatusResponse{}, err
	}
	h := m.StoreHealth()
	return control.StatusResponse{Minions: st, Master: m.Name(), Store: &h}, nil
}

func (m *Master) ctlJobs(_ context.Context, req control.JobsRequest, _ func(Event)) (control.JobsResponse, error) {
	jobs, err := m.JobsList(req.Limit)
	return control.JobsResponse{Jobs: jobs}, err
}

func (m *Master) ctlJob(_ context.Context, req control.JobRequest, _ func(Event)) (JobDetail, error) {
	d, err := m.Job(req.JID)
	if err != nil {
		return JobDetail{}, fmt.Errorf("job %s: %w", req.JID, err)
	}
	return *d, nil
}

func (m *Master) ctlFacts(_ context.Context, req control.FactsRequest, _ func(Event)) (control.FactsResponse, error) {
	ids, err := m.ResolveTarget(req.Target)
	if err != nil {
		return control.FactsResponse{}, err
	}
	if len(ids) == 0 {
		return control.FactsResponse{}, noMinionsError(m.checkTarget(req.Target, nil))
	}
	out := map[string]map[string]any{}
	for _, id := range ids {
		out[id] = m.Facts(id)
	}
	return control.FactsResponse{Facts: out}, nil
}

func (m *Master) ctlDrift(_ context.Context, req control.DriftRequest, _ func(Event)) (control.DriftResponse, error) {
	recs, err := m.Drift(req.Target, req.All)
	return control.DriftResponse{Records: recs}, err
}

func (m *Master) ctlFinger(context.Context, control.None, func(Event)) (control.FingerResponse, error) {
	return control.FingerResponse{Finger: m.key.Pub.Fingerprint()}, nil
}

func (m *Master) ctlTokenCreate(_ context.Context, req control.TokenRequest, _ func(Event)) (control.TokenResponse, error) {
	tok, t, err := m.tokens.Create(pki.TokenRequest{ID: req.ID, Groups: req.Groups, TTL: req.TTL})
	if err != nil {
		return control.TokenResponse{}, err
	}
	return control.TokenResponse{Token: tok, Expires: t.Expires}, nil
}

// keyGlob is the glob of a key op: "" is every key.
func keyGlob(g string) string {
	if g == "" {
		return "*"
	}
	return g
}

func (m *Master) ctlKeyList(_ context.Context, req control.KeyListRequest, _ func(Event)) (control.KeyListResponse, error) {
	glob := keyGlob(req.Glob)
	if _, perr := path.Match(glob, ""); perr != nil {
		return control.KeyListResponse{}, fmt.Errorf("bad key pattern %q", glob)
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
	return control.KeyListResponse{Keys: out, MasterFinger: m.key.Pub.Fingerprint(), Master: m.Name()}, nil
}

func (m *Master) ctlKeyAccept(_ context.Context, req control.KeyAcceptRequest, _ func(Event)) (control.KeyAcceptResponse, error) {
	recs, err := m.keys.AcceptKeys(keyGlob(req.Glob), req.Groups, req.All, req.Finger)
	if err != nil {
		return control.KeyAcceptResponse{}, err
	}
	var r control.KeyAcceptResponse
	r.Keys = make([]KeyInfo, len(recs))
	for i, k := range recs {
		r.Keys[i] = keyInfo(k)
		r.IDs = append(r.IDs, k.ID)
		m.log.Info("minion key accepted", "minion", k.ID, "finger", k.Finger(), "source", k.Source, "groups", k.Groups)
	}
	return r, nil
}

func (m *Master) ctlKeyReject(_ context.Context, req control.KeyRequest, _ func(Event)) (control.KeyIDs, error) {
	ids, err := m.keys.Reject(keyGlob(req.Glob))
	m.RemoveMinions(ids, false)
	return control.KeyIDs{IDs: ids}, err
}

func (m *Master) ctlKeyDelete(_ context.Context, req control.KeyRequest, _ func(Event)) (control.KeyIDs, error) {
	ids, err := m.keys.Delete(keyGlob(req.Glob))
	m.RemoveMinions(ids, true)
	return control.KeyIDs{IDs: ids}, err
}

func (m *Master) ctlKeyGroups(_ context.Context, req control.KeyGroupsRequest, _ func(Event)) (control.KeyIDs, error) {
	ids, err := m.keys.SetGroups(keyGlob(req.Glob), req.Groups)
	for _, id := range ids {
		if f := m.Facts(id); f != nil {
			_ = m.setFacts(id, f)
		}
	}
	return control.KeyIDs{IDs: ids}, err
}

func (m *Master) ctlKeyAcceptTinc(_ context.Context, req control.KeyAcceptTincRequest, _ func(Event)) (control.KeyIDs, error) {
	glob, netGlob := keyGlob(req.Glob), req.Network
	if netGlob == "" {
		netGlob = "*"
	}
	if _, perr := path.Match(netGlob, ""); perr != nil {
		return control.KeyIDs{}, fmt.Errorf("bad network pattern %q", netGlob)
	}
	var ids []string
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
	return control.KeyIDs{IDs: ids}, nil
}

// keyInfo converts a key store record.
func keyInfo(k pki.MinionKey) KeyInfo {
	return KeyInfo{ID: k.ID, State: string(k.State), Finger: k.Finger(), Groups: k.Groups, Requested: k.Requested,
		Source: k.Source, Created: k.Created}
}
