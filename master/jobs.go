package master

import (
	"bytes"
	"cmp"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/brinecm/brine/internal/jobstore"
	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/pki"
	"github.com/brinecm/brine/states"
	"github.com/brinecm/brine/states/bounded"
	"github.com/brinecm/brine/states/resources/builtin"
)

// ErrNoMinions is returned when a target resolves to no minion: nothing is published
// (DESIGN.md invariant 15).
var ErrNoMinions = errors.New("target matches no accepted minion; nothing was sent")

// maxPhases bounds the re-runs of a bundle whose peers() context changed during its apply.
const maxPhases = 3

// maxValidations bounds the minions a bundle is compiled for on the master before it is
// declared invalid: a bundle that fails only with one minion's facts still goes to the others.
const maxValidations = 8

// JobSpec is a job for an explicit set of minions. Rollouts (batches, canaries) call Run with
// subsets of a resolved target.
type JobSpec struct {
	Kind     string // wire.JobApply or wire.JobPing
	Target   string // as the operator wrote it, for the record
	Minions  []string
	Bundle   *states.Bundle // nil for ping
	DryRun   bool
	Timeout  time.Duration
	Vars     map[string]string
	VarFiles map[string][]byte

	// Site, when set, adds its groups to every minion's: in targets of peers(), in the signed
	// groups a bundle sees as minion.groups (site.go).
	Site *Site
	// History is the kind recorded in the job history when it is not Kind (historyConverge).
	History string
	// Run is the command of a wire.JobRun job.
	Run *wire.RunSpec
	// Capture are the options of a wire.JobCapture job.
	Capture *wire.CaptureSpec
	// BundleName names the bundle (its directory, or a converge's bundle set) in the history.
	BundleName string
	// StartedBy says who started the job (default: WithStartedBy of Run's context).
	StartedBy string

	validated bool          // the bundle was compiled for these minions already (Converge)
	loaded    *loadedBundle // the bundle parsed and packed (load), shared by the copies of spec
}

// loadedBundle is a job's bundle parsed and packed once, for every validation, phase and batch
// of the job.
type loadedBundle struct {
	mod    *states.Module
	packed states.Packed
}

// load parses and packs spec's bundle unless that is done: copies of spec made after it
// (rollout batches, converge's sets) share the result. A bundle whose peers() or secret()
// calls are not literal cannot be resolved before it is sent, so it does not load.
func (spec *JobSpec) load() hcl.Diagnostics {
	if spec.Bundle == nil || spec.loaded != nil {
		return nil
	}
	mod, diags := states.Load(spec.Bundle, builtin.Types())
	if diags.HasErrors() {
		return diags
	}
	if mod.CallDiags.HasErrors() {
		return append(diags, mod.CallDiags...)
	}
	spec.loaded = &loadedBundle{mod: mod, packed: spec.Bundle.Pack()}
	return nil
}

// Result is the outcome of Run: the last phase's returns and who did not return.
type Result struct {
	JIDs    []string
	Returns map[string]wire.Return
	Missing []string
}

// Failed reports whether any minion failed or did not return.
func (r *Result) Failed() bool {
	if len(r.Missing) > 0 {
		return true
	}
	for _, ret := range r.Returns {
		if !ret.Success {
			return true
		}
	}
	return false
}

// historyConverge is the kind the job history records for the applies of a converge.
const historyConverge = "converge"

// NewJID returns a job id that sorts by time: UTC yyyymmddhhmmss + microseconds + random.
func NewJID() string {
	now := time.Now().UTC()
	return fmt.Sprintf("%s%06d-%s", now.Format("20060102150405"), now.Nanosecond()/1000, hex.EncodeToString(pki.RandomBytes(3)))
}

// Validate compiles mod as it would be compiled for minion mi (with placeholder secrets), so
// that a broken bundle is stopped before anything is sent. It compiles in this process,
// unbounded: the master validates in a bounded child (validate).
func Validate(mod *states.Module, mi MinionInfo, peers map[string][]map[string]any, vars map[string]string, varFiles map[string][]byte) (diags hcl.Diagnostics) {
	// The facts are a minion's: whatever they hold, compiling with them ends in diagnostics.
	defer func() {
		if r := recover(); r != nil {
			diags = hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Internal error compiling the bundle",
				Detail: fmt.Sprintf("Compiling for minion %s failed: %s.", mi.ID, quoteKey(fmt.Sprint(r)))}}
		}
	}()
	_, diags = states.Compile(mod, validateOptions(mod, mi, peers, vars, varFiles))
	return diags
}

// validateOptions are the options of a validation compile for mi: placeholder secrets.
func validateOptions(mod *states.Module, mi MinionInfo, peers map[string][]map[string]any, vars map[string]string, varFiles map[string][]byte) states.Options {
	secrets := map[string]string{}
	for _, n := range mod.SecretNames {
		secrets[n] = "placeholder"
	}
	return states.Options{
		Minion:   states.Minion{ID: mi.ID, Groups: mi.Groups, Facts: mi.Facts},
		Vars:     vars,
		VarFiles: varFiles,
		Peers:    peers,
		Secrets:  secrets,
	}
}

// peersFor resolves every peers() target of b to the facts of its minions, sorted by id. Each
// entry holds the minion's facts (claims), its id and groups, and `attested`: what the master
// vouches for (attest.go), which the facts cannot set. An entry the language could not hold is
// left out with a log line, so that one minion's data cannot fail every bundle.
func (m *Master) peersFor(targets []string, site *Site) (map[string][]map[string]any, error) {
	if len(targets) == 0 {
		return nil, nil
	}
	all := site.extend(m.Minions())
	sort.Slice(all, func(i, j int) bool { return all[i].ID < all[j].ID })
	out := map[string][]map[string]any{}
	claims := map[string]int{} // encoded bytes of each minion's facts, measured once a job
	for _, ts := range targets {
		t, err := ParseTarget(ts)
		if err != nil {
			return nil, fmt.Errorf("peers(%q): %w", ts, err)
		}
		list := []map[string]any{}
		for _, mi := range all {
			if f := m.peerEntry(t, mi, claims); f != nil {
				list = append(list, f)
			}
		}
		out[ts] = list
	}
	return out, nil
}

// maxPeerClaims bounds the bytes (JSON) of the facts one minion's peers() entry carries. An
// entry is copied into the job once per peers() target that names the minion, and every minion
// the job addresses receives the job: a minion's 1 MiB of facts (what a report may hold) made
// each job of a bundle with 8 such targets 8 MB larger, for every host of the fleet. Facts a
// host reports itself are a few KiB (its interfaces most of them).
const maxPeerClaims = 64 << 10

// peerEntry is mi's entry in peers() for target t, or nil when t does not match it or its data
// is not fit for a bundle. claims holds the encoded size of the facts of the minions measured so
// far (peerEntry adds mi's); an entry whose facts are larger than maxPeerClaims holds only what
// the master decides: id, groups, claimed_groups and attested.
func (m *Master) peerEntry(t Target, mi MinionInfo, claims map[string]int) (entry map[string]any) {
	defer func() {
		if r := recover(); r != nil {
			m.log.Error("left a minion out of peers(): its data made the master panic", "minion", mi.ID, "panic", quoteKey(fmt.Sprint(r)))
			entry = nil
		}
	}()
	if !t.Match(mi) {
		return nil
	}
	n, ok := claims[mi.ID]
	if !ok {
		raw, _ := json.Marshal(mi.Facts)
		n = len(raw)
		claims[mi.ID] = n
	}
	f := map[string]any{}
	if n <= maxPeerClaims {
		for k, v := range mi.Facts {
			f[k] = v
		}
	} else {
		m.peersLog.warn(m.log, mi.ID, "a minion's facts are too large to copy into other minions' jobs: its peers() entry holds only its id, groups, claimed_groups and attested values",
			"minion", mi.ID, "bytes", n, "limit", maxPeerClaims)
	}
	f["id"] = mi.ID
	gs, claimed := []any{}, []any{}
	for _, g := range mi.Groups {
		if slices.Contains(mi.Claimed, g) {
			claimed = append(claimed, g)
		} else {
			gs = append(gs, g)
		}
	}
	f["groups"] = gs
	f["claimed_groups"] = claimed
	f["attested"] = m.attest.get(mi.ID).peerValue()
	if err := states.CheckData(f); err != nil {
		m.log.Error("left a minion out of peers(): its facts are not fit for a bundle", "minion", mi.ID, "err", err)
		return nil
	}
	return f
}

// validate compiles spec's bundle on the master before anything is sent: for its first minion, and
// while that fails, for the next ones (up to maxValidations). A bundle that compiles for one of
// them goes out: a minion whose own facts make it fail reports that in its return, as the others
// apply. Only a bundle that fails for every minion tried is invalid.
func (m *Master) validate(ctx context.Context, spec JobSpec, peers map[string][]map[string]any) hcl.Diagnostics {
	infos := map[string]MinionInfo{}
	for _, mi := range spec.Site.extend(m.Minions()) {
		infos[mi.ID] = mi
	}
	var opts []states.Options
	var ids []string
	for i, id := range spec.Minions {
		if i == maxValidations {
			break
		}
		mi, ok := infos[id]
		if !ok {
			mi = MinionInfo{ID: id}
		}
		opts = append(opts, validateOptions(spec.loaded.mod, mi, peers, spec.Vars, spec.VarFiles))
		ids = append(ids, id)
	}
	// The expressions are the submitter's and the facts the minions': compiling them has no
	// bound of its own, so it runs in a child process that the kernel bounds (states/bounded).
	results, err := bounded.Compile(ctx, spec.loaded.packed.Bytes, spec.Bundle.Root, opts, true, m.cfg.compileLimits)
	if err != nil {
		name := spec.BundleName
		if name == "" {
			name = "the bundle"
		} else {
			name = fmt.Sprintf("bundle %q", name)
		}
		detail := fmt.Sprintf("Compiling %s (digest %.12s) on the master failed: %v.", name, spec.loaded.packed.Digest, err)
		if errors.Is(err, bounded.ErrBound) {
			detail += " Every compile is bounded (docs/master.md, \"Bounded compilation\"): make its expressions (for, templates, functions over large collections) smaller."
			m.log.Warn("a bundle went over the compile bound; refused", "bundle", spec.BundleName, "digest", spec.loaded.packed.Digest, "err", err)
		}
		return hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Bundle refused: over the compile bound", Detail: detail}}
	}
	var first hcl.Diagnostics
	for i, r := range results {
		d := r.Diagnostics()
		if !d.HasErrors() {
			if first != nil {
				m.log.Warn("the bundle does not compile for some minions; they will report it, the others apply", "compiled_for", ids[i])
			}
			return nil
		}
		if first == nil {
			first = d
		}
	}
	return first
}

// publishJob signs, seals, records and publishes one job for spec.Minions: its content is
// sealed under a random job key, wrapped for each addressed minion's own session key (DESIGN.md
// invariant 19).
func (m *Master) publishJob(spec JobSpec, peers map[string][]map[string]any, secretNames []string, phase int, parent string) (jobstore.Job, error) {
	if len(spec.Minions) == 0 {
		return jobstore.Job{}, ErrNoMinions
	}
	if err := m.storeLost(); err != nil {
		return jobstore.Job{}, err
	}
	acc := m.keys.Accepted()
	for _, id := range spec.Minions {
		if _, ok := acc[id]; !ok {
			return jobstore.Job{}, fmt.Errorf("minion %s is not accepted; nothing was sent", id)
		}
	}
	now := time.Now().UTC()
	meta := wire.JobMeta{
		JID: NewJID(), Kind: spec.Kind, Target: spec.Target, Minions: spec.Minions,
		IssuedAt: now, ExpiresAt: now.Add(spec.Timeout), DryRun: spec.DryRun,
		Vars: spec.Vars, VarFiles: spec.VarFiles, Peers: peers,
		Groups: make(map[string][]string, len(spec.Minions)),
	}
	for _, id := range spec.Minions {
		meta.Groups[id] = spec.Site.GroupsOf(MinionInfo{ID: id, Groups: acc[id].Groups, Facts: m.Facts(id)})
	}
	meta.Run = spec.Run
	meta.Capture = spec.Capture
	var bundle []byte
	var sealedVars map[string]string
	if spec.Bundle != nil {
		if diags := spec.load(); diags.HasErrors() {
			return jobstore.Job{}, fmt.Errorf("%s; nothing was sent", diags.Error())
		}
		bundle = spec.loaded.packed.Bytes
		meta.BundleDigest = spec.loaded.packed.Digest
		// Sensitive variables travel sealed to each minion, like secrets, not in the clear job.
		meta.Vars, meta.VarFiles, sealedVars = states.SealInputs(spec.loaded.mod, spec.Vars, spec.VarFiles)
	}
	if len(secretNames) > 0 || len(sealedVars) > 0 {
		if err := m.sealInputs(&meta, spec, acc, secretNames, sealedVars); err != nil {
			return jobstore.Job{}, err
		}
	}
	copies, frames, signed, err := m.sealJobCopies(meta, bundle)
	if err != nil {
		return jobstore.Job{}, err
	}
	for _, f := range frames {
		if err := checkFrame(len(f.minions), len(copies[f.copy].payload)); err != nil {
			return jobstore.Job{}, err
		}
	}
	// The signed job in the store is sealed whole by the master that delivers it elsewhere (to
	// its own minions, or after a failover): its frames must fit too.
	for _, f := range oneCopyFrames(meta.Minions, len(bundle)) {
		if err := checkFrame(len(f.minions), len(signed)+pki.SecretOverhead); err != nil {
			return jobstore.Job{}, err
		}
	}
	rec := jobstore.Job{
		JID: meta.JID, Kind: cmp.Or(spec.History, spec.Kind), Target: spec.Target, Minions: spec.Minions, DryRun: spec.DryRun,
		Digest: meta.BundleDigest, Created: now, Expires: meta.ExpiresAt, Phase: phase, ParentJID: parent,
		Bundle: spec.BundleName, StartedBy: spec.StartedBy,
	}
	if err := m.store.PutJob(rec); err != nil {
		return jobstore.Job{}, fmt.Errorf("record job: %w", err)
	}
	m.kickPrune()
	if err := m.deliver.Add(rec.JID, rec.Minions, rec.Expires, signed); err != nil {
		return jobstore.Job{}, fmt.Errorf("record job: %w", err)
	}
	m.copies.add(rec.JID, spec.Kind, rec.Minions, rec.Expires, copies, frames)
	sent := m.publishJobFrames(copies, frames, spec.Minions)
	m.log.Info("published job", "jid", meta.JID, "kind", spec.Kind, "target", spec.Target, "minions", len(spec.Minions), "bytes", sent)
	return rec, nil
}

// Run publishes spec to its minion set and waits for their returns until all have returned or
// spec.Timeout passes, calling emit for every step. A bundle that calls peers() is applied
// again (up to maxPhases in all) while the peers' facts change under it, so that a fresh set of
// hosts converges in one command (for example a tinc mesh whose public keys exist only after
// the first phase). The result is the last phase's.
func (m *Master) Run(ctx context.Context, spec JobSpec, emit func(Event)) (*Result, error) {
	if emit == nil {
		emit = func(Event) {}
	}
	if spec.Timeout <= 0 {
		spec.Timeout = m.cfg.jobTimeout
	}
	if spec.Kind == "" {
		spec.Kind = wire.JobApply
	}
	if spec.StartedBy == "" {
		spec.StartedBy = startedBy(ctx)
	}
	if len(spec.Minions) == 0 {
		return nil, ErrNoMinions
	}
	if spec.Site == nil {
		// Every job's minion.groups holds the configured site's groups, whoever starts it.
		site, tree, diags, err := m.siteFor(nil, "", false)
		if err != nil {
			return nil, err
		}
		if diags.HasErrors() {
			return nil, siteError(tree, diags)
		}
		spec.Site = site
	}
	var peerTargets, secretNames []string
	if spec.Bundle != nil {
		if diags := spec.load(); diags.HasErrors() {
			return nil, m.invalid(spec.Bundle, diags, emit)
		}
		peerTargets, secretNames = spec.loaded.mod.PeerTargets, spec.loaded.mod.SecretNames
	}
	// A minion selected only by its facts that may not receive the job's secrets or sensitive
	// values is left out: a claim must neither win them nor stop the job for the others.
	keep, leftOut, err := m.claimants(spec, secretNames)
	if err != nil {
		return nil, err
	}
	if len(leftOut) > 0 {
		emit(Event{Event: "left_out", Minions: leftOut, Error: "selected only by facts it reports (claims), and may not receive this job's secrets or sensitive values; nothing was sent to it"})
		m.log.Warn("left minions out of a job: selected only by their facts, not entitled to its secrets or sensitive values", "minions", leftOut)
		if len(keep) == 0 {
			return nil, fmt.Errorf("minion(s) %s are selected only by facts they report and may not receive this job's secrets or sensitive values; nothing was sent", strings.Join(leftOut, ", "))
		}
		spec.Minions = keep
	}
	res := &Result{}
	parent := ""
	for phase := 1; phase <= maxPhases; phase++ {
		peers, err := m.peersFor(peerTargets, spec.Site)
		if err != nil {
			return nil, err
		}
		if spec.Bundle != nil && phase == 1 && !spec.validated {
			if diags := m.validate(ctx, spec, peers); diags.HasErrors() {
				return nil, m.invalid(spec.Bundle, diags, emit)
			}
		}
		rets, missing, jid, err := m.runPhase(ctx, spec, peers, secretNames, phase, parent, emit)
		if err != nil {
			return res, err
		}
		if parent == "" {
			parent = jid
		}
		res.JIDs = append(res.JIDs, jid)
		res.Returns, res.Missing = rets, missing
		if spec.DryRun || len(peerTargets) == 0 || len(missing) > 0 || ctx.Err() != nil {
			break
		}
		after, err := m.peersFor(peerTargets, spec.Site)
		if err != nil || reflect.DeepEqual(normalize(peers), normalize(after)) {
			break
		}
		m.log.Info("peers changed during the apply; applying again", "jid", jid, "phase", phase+1)
	}
	res.Missing = append(res.Missing, leftOut...)
	sort.Strings(res.Missing)
	emit(Event{Event: "done", JID: res.JIDs[len(res.JIDs)-1], Missing: res.Missing})
	return res, nil
}

// normalize gives two peers maps a comparable form (JSON round trip).
func normalize(v any) any {
	raw, _ := json.Marshal(v)
	var out any
	_ = json.Unmarshal(raw, &out)
	return out
}

func (m *Master) invalid(b *states.Bundle, diags hcl.Diagnostics, emit func(Event)) error {
	var buf bytes.Buffer
	states.WriteDiagnostics(&buf, b, diags, false)
	emit(Event{Event: "invalid", Diagnostics: buf.String(), Error: "the bundle is invalid; nothing was sent"})
	return errors.New("the bundle is invalid; nothing was sent")
}

func (m *Master) runPhase(ctx context.Context, spec JobSpec, peers map[string][]map[string]any, secretNames []string, phase int, parent string, emit func(Event)) (map[string]wire.Return, []string, string, error) {
	// The watch starts after publishing (the jid is made there); a return that races ahead of
	// it is already in the store, which is read once the watch is in place.
	job, err := m.publishJob(spec, peers, secretNames, phase, parent)
	if err != nil {
		return nil, nil, "", err
	}
	ch, cancel := m.watch(job.JID, len(spec.Minions))
	defer cancel()
	emit(Event{Event: "published", JID: job.JID, Phase: phase, Minions: spec.Minions})
	rets := map[string]wire.Return{}
	// Returns that raced ahead of the watch are in the store.
	if stored, err := m.store.Returns(job.JID); err == nil {
		for _, r := range stored {
			var ret wire.Return
			if json.Unmarshal(r.Data, &ret) == nil {
				rets[r.Minion] = ret
				emit(Event{Event: "return", JID: job.JID, Phase: phase, Return: &ret})
			}
		}
	}
	timer := time.NewTimer(spec.Timeout)
	defer timer.Stop()
	for len(rets) < len(spec.Minions) {
		select {
		case r := <-ch:
			if _, seen := rets[r.Minion]; seen {
				continue
			}
			rets[r.Minion] = r
			m.metrics.returned(job.Kind, time.Since(job.Created))
			emit(Event{Event: "return", JID: job.JID, Phase: phase, Return: &r})
		case <-timer.C:
			goto out
		case <-ctx.Done():
			goto out
		}
	}
out:
	var missing []string
	for _, id := range spec.Minions {
		if _, ok := rets[id]; !ok {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		emit(Event{Event: "missing", JID: job.JID, Phase: phase, Missing: missing})
	}
	ok := 0
	for _, r := range rets {
		if r.Success {
			ok++
		}
	}
	m.metrics.jobDone(job.Kind, ok, len(rets)-ok, len(missing))
	return rets, missing, job.JID, nil
}

// Job returns the stored job jid and its returns.
func (m *Master) Job(jid string) (*JobDetail, error) {
	j, err := m.store.Job(jid)
	if err != nil {
		return nil, err
	}
	rs, err := m.store.Returns(jid)
	if err != nil {
		return nil, err
	}
	d := &JobDetail{Job: j, Returns: map[string]wire.Return{}}
	for _, r := range rs {
		var ret wire.Return
		if json.Unmarshal(r.Data, &ret) == nil {
			d.Returns[r.Minion] = ret
		}
	}
	for _, id := range j.Minions {
		if _, ok := d.Returns[id]; !ok {
			d.Missing = append(d.Missing, id)
		}
	}
	return d, nil
}
