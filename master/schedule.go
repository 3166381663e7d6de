package master

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"time"

	"github.com/brinecm/brine/internal/hclfile"
	"github.com/brinecm/brine/internal/store"
	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/states"
)

// ScheduleConfig is a `schedule "NAME" { ... }` block of master.hcl: converge the site on
// target's minions (mode "converge"), or check them with a dry-run converge and record the
// differences (mode "drift"), every `every` plus a random delay of up to `splay`.
type ScheduleConfig struct {
	Name   string `hcl:"name,label"`
	Target string `hcl:"target,optional"` // default "*"
	Every  string `hcl:"every"`
	Splay  string `hcl:"splay,optional"` // default "0s"
	Mode   string `hcl:"mode,optional"`  // converge (default) | drift

	every, splay time.Duration
}

// Schedule modes.
const (
	ModeConverge = "converge"
	ModeDrift    = "drift"
)

// Bounds of the schedules and of what a drift check records.
const (
	minScheduleEvery = time.Second
	maxSchedules     = 64
	// scheduleRetry is how often a schedule looks for minions that were down at their turn.
	scheduleRetry = 2 * time.Second
	// maxDriftChanges and maxDriftDiff bound one host's record (a return is bounded already;
	// the record file is read whole at start).
	maxDriftChanges = 200
	maxDriftDiff    = 8 << 10
)

// fillSchedules checks the schedule blocks and parses their durations.
func (c *Config) fillSchedules() error {
	if len(c.Schedules) > maxSchedules {
		return hclfile.Field(fmt.Errorf("%d schedule blocks; at most %d", len(c.Schedules), maxSchedules), "schedule")
	}
	seen := map[string]bool{}
	for i := range c.Schedules {
		s := &c.Schedules[i]
		if s.Name == "" || seen[s.Name] {
			return hclfile.Field(errors.New("each schedule needs its own, non-empty name"), "schedule", s.Name)
		}
		seen[s.Name] = true
		if c.Site == "" {
			return hclfile.Field(errors.New("schedules converge the site, and no site is set (add site = \"/etc/brine/states\")"), "schedule", s.Name)
		}
		if s.Target == "" {
			s.Target = "*"
		}
		if _, err := ParseTarget(s.Target); err != nil {
			return hclfile.Field(err, "schedule", s.Name, "target")
		}
		switch s.Mode {
		case "":
			s.Mode = ModeConverge
		case ModeConverge, ModeDrift:
		default:
			return hclfile.Field(fmt.Errorf("mode %q is neither %q nor %q", s.Mode, ModeConverge, ModeDrift), "schedule", s.Name, "mode")
		}
		var err error
		if s.every, err = time.ParseDuration(s.Every); err != nil || s.every < minScheduleEvery {
			return hclfile.Field(fmt.Errorf("every = %q: want a duration of at least %s, e.g. \"30m\"", s.Every, minScheduleEvery), "schedule", s.Name, "every")
		}
		if s.Splay == "" {
			s.Splay = "0s"
		}
		if s.splay, err = time.ParseDuration(s.Splay); err != nil || s.splay < 0 {
			return hclfile.Field(fmt.Errorf("splay = %q: want a duration, e.g. \"5m\"", s.Splay), "schedule", s.Name, "splay")
		}
	}
	return nil
}

// scheduleLoop runs one schedule until the master stops: a round every sc.every plus a random
// splay, and between rounds the minions that were down at their turn as soon as they are back.
// Each round is claimed in the store (store.Rounds): with masters sharing a database, one of
// them runs it, for the target's minions wherever they are connected, and the next round is
// claimable only once that one is over and sc.every has passed. The minions that were down at
// their turn are retried by the master that ran the round, while no other has claimed the next.
// A master that lost its database runs no round and retries no minion until it is back.
func (m *Master) scheduleLoop(sc ScheduleConfig) {
	splay := func() time.Duration {
		if sc.splay <= 0 {
			return 0
		}
		return rand.N(sc.splay + 1)
	}
	rounds := m.st.Rounds()
	// A round not finished by then was lost with its master: another may claim the next.
	stale := 3*m.cfg.jobTimeout + sc.every + time.Minute
	timer := time.NewTimer(sc.every + splay())
	defer timer.Stop()
	retry := time.NewTicker(scheduleRetry)
	defer retry.Stop()
	pending := map[string]bool{} // minions whose turn came while they were down
	var mine int64               // the round this master ran last
	var unfinished int64         // a round of ours the store did not record as over
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-timer.C:
			if err := m.storeLost(); err != nil {
				m.fleet.storeLog.warn(m.log, "schedule lost "+sc.Name, "schedule: no round while the database is lost", "schedule", sc.Name)
				timer.Reset(min(sc.every, scheduleRetry) + splay())
				continue
			}
			if unfinished != 0 {
				if err := rounds.FinishRound(sc.Name, unfinished, sc.every); err != nil {
					m.fleet.storeLog.warn(m.log, "schedule finish "+sc.Name, "schedule: could not record the end of a round", "schedule", sc.Name, "err", err)
					timer.Reset(min(sc.every, scheduleRetry) + splay())
					continue
				}
				unfinished = 0
			}
			r, claimed, wait, err := rounds.ClaimRound(sc.Name, m.cfg.Name, sc.every, stale)
			if err != nil {
				m.fleet.storeLog.warn(m.log, "schedule claim "+sc.Name, "schedule: could not claim a round", "schedule", sc.Name, "err", err)
				timer.Reset(min(sc.every, scheduleRetry) + splay())
				continue
			}
			if !claimed {
				// Another master runs the schedule now: the minions down at our last turn are
				// its to converge when they are back.
				clear(pending)
				mine = 0
				if wait <= 0 {
					wait = min(sc.every, scheduleRetry) // its round is still running
				}
				m.log.Debug("schedule: the round is another master's", "schedule", sc.Name, "round", r.N, "master", r.Master)
				timer.Reset(wait + splay())
				continue
			}
			mine = r.N
			m.scheduleRound(sc, nil, pending)
			if err := rounds.FinishRound(sc.Name, r.N, sc.every); err != nil {
				unfinished = r.N
				m.fleet.storeLog.warn(m.log, "schedule finish "+sc.Name, "schedule: could not record the end of a round", "schedule", sc.Name, "err", err)
			}
			timer.Reset(sc.every + splay())
		case <-retry.C:
			if len(pending) == 0 || m.storeLost() != nil {
				continue
			}
			if last, err := rounds.LastRound(sc.Name); err != nil {
				continue
			} else if last.N != mine || last.Master != m.cfg.Name {
				clear(pending) // another master runs the schedule now
				continue
			}
			up := m.reachableIDs()
			var back []string
			for id := range pending {
				if up[id] {
					back = append(back, id)
				}
			}
			if len(back) > 0 {
				sort.Strings(back)
				m.log.Info("schedule: minions that were down at their turn are back", "schedule", sc.Name, "minions", back)
				m.scheduleRound(sc, back, pending)
			}
		}
	}
}

// scheduleRound converges (or checks) the connected minions of sc's target, or of only when it
// is not nil; the others are left in pending for when they return.
func (m *Master) scheduleRound(sc ScheduleConfig, only []string, pending map[string]bool) {
	site, tree, diags, err := m.siteFor(nil, "", true)
	if err == nil && diags.HasErrors() {
		err = siteError(tree, diags)
	}
	if err == nil && site == nil {
		err = fmt.Errorf("no site")
	}
	if err != nil {
		m.log.Error("schedule: cannot read the site; skipped this turn", "schedule", sc.Name, "err", err)
		return
	}
	ids, err := m.ResolveTargetIn(sc.Target, site)
	if err != nil {
		m.log.Error("schedule: bad target", "schedule", sc.Name, "err", err)
		return
	}
	inTarget := map[string]bool{}
	for _, id := range ids {
		inTarget[id] = true
	}
	for id := range pending {
		if !inTarget[id] {
			delete(pending, id) // deleted, or no longer in the target
		}
	}
	if only != nil {
		ids = nil
		for _, id := range only {
			if inTarget[id] {
				ids = append(ids, id)
			}
		}
	}
	up := m.reachableIDs()
	var run []string
	for _, id := range ids {
		if up[id] {
			run = append(run, id)
		} else {
			pending[id] = true
		}
	}
	if len(run) == 0 {
		return
	}
	ctx := WithStartedBy(m.ctx, "schedule "+sc.Name)
	res, err := m.Converge(ctx, ConvergeSpec{Target: sc.Target, Minions: run, Site: site, DryRun: sc.Mode == ModeDrift,
		Timeout: m.cfg.jobTimeout}, Rollout{}, nil)
	if err != nil {
		m.log.Error("schedule: converge failed", "schedule", sc.Name, "mode", sc.Mode, "err", err)
	}
	if res == nil {
		return
	}
	drift := map[string]DriftRecord{}
	for _, id := range run {
		ret, ok := res.Returns[id]
		if !ok {
			continue
		}
		delete(pending, id)
		if sc.Mode == ModeDrift {
			drift[id] = driftRecord(sc.Name, id, ret)
		}
	}
	m.recordDrift(drift)
	for _, id := range res.Missing {
		pending[id] = true
	}
	m.log.Info("schedule: ran", "schedule", sc.Name, "mode", sc.Mode, "minions", len(run), "returned", len(res.Returns), "pending", len(pending))
}

// connectedIDs is the set of minions connected now (as `brine status` counts them).
func (m *Master) connectedIDs() map[string]bool {
	var seen map[string]time.Time
	if acc, err := m.acceptedKeys(); err != nil {
		seen = m.seen.snapshot(nil) // keys it cannot read are not gone: forget nobody
	} else {
		accepted := map[string]bool{}
		for id := range acc {
			accepted[id] = true
		}
		seen = m.seen.snapshot(accepted)
	}
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]bool{}
	within := connectedWithin(len(m.sessions))
	for id := range m.byMinion {
		if t, ok := seen[id]; ok && now.Sub(t) < within {
			out[id] = true
		}
	}
	return out
}

// driftRecord makes the record of minion id's dry-run return: every resource that would change.
func driftRecord(schedule, id string, ret wire.Return) DriftRecord {
	d := DriftRecord{Minion: id, Schedule: schedule, JID: ret.JID, Checked: ret.Finished, Error: truncate(ret.Error, maxDriftDiff)}
	if d.Checked.IsZero() {
		d.Checked = time.Now().UTC()
	}
	var rep states.Report
	if len(ret.Report) > 0 && json.Unmarshal(ret.Report, &rep) == nil {
		for _, r := range rep.Results {
			switch r.Status {
			case states.StatusChanged:
				if len(d.Changes) < maxDriftChanges {
					d.Changes = append(d.Changes, DriftChange{Address: truncate(r.Address, 512), Diff: truncate(r.Diff, maxDriftDiff)})
				}
				d.Drifted = true
			case states.StatusFailed:
				if d.Error == "" {
					d.Error = truncate(r.Address+": "+r.Error, maxDriftDiff)
				}
			}
		}
	}
	return d
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + fmt.Sprintf("... (%d more bytes)", len(s)-n)
}

// maxDriftRecord bounds a drift record read back from the store: maxDriftChanges resources of
// maxDriftDiff each, with room for JSON's escapes of control characters (6 bytes for 1).
const maxDriftRecord = 16 << 20

// recordDrift records one round's drift checks (by minion) in the store, where every master of a
// shared store reads them. A store that cannot take them loses this round's (the next round
// checks again): the log says so.
func (m *Master) recordDrift(recs map[string]DriftRecord) {
	if len(recs) == 0 {
		return
	}
	checks := make(map[string]store.DriftCheck, len(recs))
	for id, r := range recs {
		data, err := json.Marshal(r)
		if err != nil {
			m.log.Error("schedule: could not encode a drift check", "minion", id, "err", err)
			continue
		}
		checks[id] = store.DriftCheck{Checked: r.Checked, Record: data}
	}
	if err := m.st.Drifts().PutDrifts(checks); err != nil {
		m.log.Error("schedule: could not record the drift checks", "minions", len(checks), "err", err)
	}
}

// driftOf returns the last drift checks of ids that have one, dropping those of minions not in
// accepted. A stored record is checked as it is read: bounded, and naming the minion it is
// stored for.
func (m *Master) driftOf(ids []string, accepted map[string]bool) ([]DriftRecord, error) {
	checks, err := m.st.Drifts().Drifts(ids)
	if err != nil {
		return nil, fmt.Errorf("read drift checks: %w", err)
	}
	var out []DriftRecord
	for _, id := range ids {
		c, ok := checks[id]
		if !ok || !accepted[id] {
			continue
		}
		var r DriftRecord
		if err := wire.Unmarshal(c.Record, maxDriftRecord, &r); err != nil || r.Minion != id {
			m.log.Warn("ignored a stored drift check that is not valid", "minion", id, "err", err)
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

// Drift returns the last drift check of the minions target names (with the configured site's
// groups): only those that drifted or whose check failed, unless all.
func (m *Master) Drift(target string, all bool) ([]DriftRecord, error) {
	site, tree, diags, err := m.siteFor(nil, "", false)
	if err != nil {
		return nil, err
	}
	if diags.HasErrors() {
		return nil, siteError(tree, diags)
	}
	if target == "" {
		target = "*"
	}
	ids, err := m.ResolveTargetIn(target, site)
	if err != nil {
		return nil, err
	}
	accepted := map[string]bool{}
	for id := range m.keys.Accepted() {
		accepted[id] = true
	}
	var out []DriftRecord
	recs, err := m.driftOf(ids, accepted)
	if err != nil {
		return nil, err
	}
	for _, r := range recs {
		if all || r.Drifted || r.Error != "" {
			out = append(out, r)
		}
	}
	return out, nil
}

// startSchedules starts one loop per schedule block.
func (m *Master) startSchedules() {
	for _, sc := range m.cfg.Schedules {
		m.wg.Add(1)
		go func() { defer m.wg.Done(); m.scheduleLoop(sc) }()
	}
}
