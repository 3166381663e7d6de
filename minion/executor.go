package minion

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/pki"
	"github.com/brinecm/brine/states"
	"github.com/brinecm/brine/states/resources/builtin"
)

// Job refusals.
var (
	ErrNotForUs   = errors.New("job is not addressed to this minion")
	ErrJobExpired = errors.New("job expired")
	ErrJobReplay  = errors.New("job already seen (replay)")
)

// job is a job that passed OpenJob.
type job struct {
	meta wire.JobMeta
	// bundle is an apply's bundle, unpacked once from the very bytes whose digest was checked
	// against the signed one; nil for other kinds.
	bundle *states.Bundle
}

// executor is the half of the minion that runs jobs: it opens and verifies what the sessions
// receive, queues what passes, and runs it one job at a time, outside the sessions, so that
// heartbeats go on during a long apply. It does not talk to the master: each return goes to
// finished (the minion's facts report and outbox).
type executor struct {
	id        string
	own       *pki.KeyPair
	keys      *keyring
	seen      *seenJobs
	log       *slog.Logger
	slots     chan struct{} // Config.ExecSlots
	gcPercent int           // Config.ApplyGCPercent
	facts     func() map[string]any
	finished  func(j job, ret wire.Return, facts map[string]any)

	jobs    chan job
	applied atomic.Int64

	// The module of the last bundle loaded and the digest of its signed bytes: an apply of the
	// same digest (the same bundle, to the byte) is compiled from it without parsing the bundle
	// again. Only the parse is kept; every job is compiled afresh with its own vars, facts,
	// peers and secrets. Touched only by run's goroutine.
	modDigest string
	mod       *states.Module
	loads     int // bundles parsed (for tests)
}

func newExecutor(m *Minion) *executor {
	return &executor{id: m.cfg.ID, own: m.key, keys: m.keys, seen: m.seen, log: m.log, slots: m.cfg.ExecSlots,
		gcPercent: m.cfg.ApplyGCPercent, facts: m.facts, finished: m.finished, jobs: make(chan job, 64)}
}

// receive opens a published job body and queues it if it passes; a job that finds the queue
// full for wait is dropped (the master names it again in a heartbeat reply, and it is not asked
// for again since it was seen: the master reports it missing).
func (e *executor) receive(body []byte, wait time.Duration) {
	j, err := e.open(body, time.Now())
	if err != nil {
		if !errors.Is(err, ErrNotForUs) {
			e.log.Warn("refused a job", "err", err)
		}
		return
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case e.jobs <- j:
	case <-t.C:
		e.log.Warn("job queue full; dropped a job", "jid", j.meta.JID)
	}
}

// bundleDigest is the hex sha256 of a packed bundle: what the master signs as the job's
// BundleDigest.
func bundleDigest(packed []byte) string {
	sum := sha256.Sum256(packed)
	return hex.EncodeToString(sum[:])
}

// open decrypts and verifies a TJob body and decides whether this minion may run it (see
// Minion.OpenJob).
func (e *executor) open(body []byte, now time.Time) (job, error) {
	jb, err := wire.SplitJob(body)
	if err != nil {
		return job{}, err
	}
	mk, cur, prev := e.keys.keys()
	if mk == nil {
		return job{}, errors.New("no pinned master key")
	}
	var jk *pki.JobKey
	for _, sk := range []*pki.SessionKey{cur, prev} {
		if sk == nil {
			continue
		}
		if w, ok := jb.WrapFor(sk.ID); ok {
			if jk, ok = sk.Unwrap(&jb.Nonce, w); !ok {
				return job{}, errors.New("job key does not decrypt")
			}
			break
		}
	}
	if jk == nil {
		return job{}, ErrNotForUs
	}
	signed, ok := jk.Open(jb.Payload)
	if !ok {
		return job{}, errors.New("job does not decrypt")
	}
	content, ok := pki.OpenAttached(mk.Sign, signed)
	if !ok {
		return job{}, errors.New("job signature does not verify against the pinned master key")
	}
	metaRaw, packed, err := wire.UnpackJob(content)
	if err != nil {
		return job{}, err
	}
	meta, addressed, err := readMeta(metaRaw, e.id)
	if err != nil {
		return job{}, err
	}
	if !addressed {
		return job{}, ErrNotForUs
	}
	if now.After(meta.ExpiresAt) {
		return job{}, fmt.Errorf("%w: %s at %s", ErrJobExpired, meta.JID, meta.ExpiresAt.Format(time.RFC3339))
	}
	j := job{meta: meta}
	if meta.Kind == wire.JobApply {
		// The digest is checked over the bytes received, which are then unpacked once: what
		// runs is what was signed.
		if bundleDigest(packed) != meta.BundleDigest {
			return job{}, errors.New("bundle digest does not match the signed one")
		}
		if j.bundle, err = states.UnmarshalBundle(packed); err != nil {
			return job{}, err
		}
	}
	if !e.seen.add(meta.JID, meta.ExpiresAt, now) {
		return job{}, fmt.Errorf("%w: %s", ErrJobReplay, meta.JID)
	}
	return j, nil
}

// run runs queued jobs one at a time until ctx ends.
func (e *executor) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-e.jobs:
			apply := j.meta.Kind == wire.JobApply
			slot := e.slots != nil && (apply || j.meta.Kind == wire.JobRun)
			if slot {
				select {
				case e.slots <- struct{}{}:
				case <-ctx.Done():
					return
				}
			}
			if e.slots == nil && apply && e.gcPercent > 0 {
				setApplyGC(e.gcPercent)
			}
			ret, facts := e.execute(ctx, j)
			e.logJob(j, ret)
			if slot {
				<-e.slots
			}
			if e.slots == nil && apply {
				// A minion idles between jobs: give the apply's heap (HCL, graph, report) back
				// to the OS, so its resident set is its idle size, not its peak (19.4 -> 16 MB
				// after an apply of 20 files). Not for minions that share a process (the
				// swarm): a full collection per minion per job would dominate.
				debug.FreeOSMemory()
			}
			e.applied.Add(1)
			e.finished(j, ret, facts)
		}
	}
}

var applyGCOnce sync.Once

// setApplyGC sets the process's GOGC to percent (Config.ApplyGCPercent), once per process.
func setApplyGC(percent int) {
	applyGCOnce.Do(func() {
		if os.Getenv("GOGC") == "" {
			debug.SetGCPercent(percent)
		}
	})
}

// execute runs j. For an apply that changed nothing (every resource ok or skipped), it also
// returns the facts it gathered for the compile: they are still the host's, and the minion
// reports them instead of gathering them again. Otherwise the facts are nil.
func (e *executor) execute(ctx context.Context, j job) (wire.Return, map[string]any) {
	ret := wire.Return{JID: j.meta.JID, Minion: e.id, Kind: j.meta.Kind, Started: time.Now().UTC()}
	switch j.meta.Kind {
	case wire.JobPing:
		ret.Success = true
		ret.Finished = time.Now().UTC()
		return ret, nil
	case wire.JobRun:
		return e.runJob(ctx, j, ret), nil
	case wire.JobCapture:
		ret = e.captureJob(ctx, j, ret)
		ret.Finished = time.Now().UTC() // captureJob's deferred assignment does not reach its result
		return ret, nil
	}
	if j.bundle == nil { // open unpacks the bundle of every apply
		ret.Error = fmt.Sprintf("unknown job kind %q", j.meta.Kind)
		ret.Finished = time.Now().UTC()
		return ret, nil
	}
	secrets := map[string]string{}
	if sealed, ok := j.meta.Secrets[e.id]; ok {
		mk := e.keys.pinned()
		raw, ok := e.own.OpenFrom(mk.Box, sealed)
		if !ok || json.Unmarshal(raw, &secrets) != nil {
			ret.Error = "cannot open the secrets sealed for this minion"
			ret.Finished = time.Now().UTC()
			return ret, nil
		}
	}
	// Sensitive variables came sealed with the secrets (states.SealInputs).
	secrets, vars, varFiles := states.OpenInputs(secrets, j.meta.Vars, j.meta.VarFiles)
	// The master's groups for this minion when it signed the job, not those of the last
	// authentication: a `brine key groups` change must reach the next job.
	groups := j.meta.Groups[e.id]
	facts := e.facts()
	withID := make(map[string]any, len(facts)+1)
	for k, v := range facts {
		withID[k] = v
	}
	withID["id"] = e.id
	var g *states.Graph
	mod, diags := e.load(j)
	if !diags.HasErrors() {
		// In process: the bundle is the master's, signed after a bounded compile there
		// (docs/design.md, "Bounded compilation").
		g, diags = states.Compile(mod, states.Options{
			Minion:   states.Minion{ID: e.id, Groups: groups, Facts: withID},
			Vars:     vars,
			VarFiles: varFiles,
			Peers:    j.meta.Peers,
			Secrets:  secrets,
		})
	}
	if diags.HasErrors() {
		var buf bytes.Buffer
		states.WriteDiagnostics(&buf, j.bundle, diags, false)
		ret.Error = "the bundle does not compile on this minion"
		ret.Diagnostics = buf.String()
		ret.Finished = time.Now().UTC()
		return ret, nil
	}
	runCtx, cancel := context.WithDeadline(ctx, j.meta.ExpiresAt.Add(time.Minute))
	defer cancel()
	rep := states.Run(runCtx, g, j.meta.DryRun)
	ret.Report, _ = json.Marshal(rep)
	ret.Success = !rep.Failed()
	ret.Finished = time.Now().UTC()
	if j.meta.DryRun || !unchanged(rep) {
		facts = nil
	}
	return ret, facts
}

// unchanged reports whether a run changed nothing on the host: every resource ok or skipped
// (a failed one may have changed part of what it manages).
func unchanged(rep *states.Report) bool {
	for _, r := range rep.Results {
		if r.Status != states.StatusOK && r.Status != states.StatusSkipped {
			return false
		}
	}
	return true
}

// load returns the module of j's bundle: the one kept when j's signed digest is the last
// loaded one's, else the bundle parsed (and kept when it parses).
func (e *executor) load(j job) (*states.Module, hcl.Diagnostics) {
	if e.mod != nil && e.modDigest == j.meta.BundleDigest {
		return e.mod, nil
	}
	e.loads++
	mod, diags := states.Load(j.bundle, builtin.Types())
	if diags.HasErrors() {
		return nil, diags
	}
	e.mod, e.modDigest = mod, j.meta.BundleDigest
	return mod, diags
}
