package master

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/brinecm/brine/internal/hclfile"
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
	for _, id := range run {
		ret, ok := res.Returns[id]
		if !ok {
			continue
		}
		delete(pending, id)
		if sc.Mode == ModeDrift {
			m.drift.record(driftRecord(sc.Name, id, ret))
		}
	}
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
	for id := range m.byMinion {
		if t, ok := seen[id]; ok && now.Sub(t) < connectedWithin {
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

// driftStore keeps each minion's last drift check, in one JSON file in the data dir, so that
// `brine drift` answers across master restarts.
type driftStore struct {
	path string

	mu     sync.Mutex // guards the fields below
	loaded bool
	recs   map[string]DriftRecord
}

func (s *driftStore) loadLocked() {
	if s.loaded {
		return
	}
	s.loaded = true
	s.recs = map[string]DriftRecord{}
	if data, err := os.ReadFile(s.path); err == nil {
		_ = json.Unmarshal(data, &s.recs)
	}
}

func (s *driftStore) record(r DriftRecord) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.loadLocked()
	s.recs[r.Minion] = r
	s.saveLocked()
}

// get returns the records of ids (those that have one), dropping the records of minions no
// longer accepted.
func (s *driftStore) get(ids []string, accepted map[string]bool) []DriftRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.loadLocked()
	changed := false
	for id := range s.recs {
		if !accepted[id] {
			delete(s.recs, id)
			changed = true
		}
	}
	if changed {
		s.saveLocked()
	}
	var out []DriftRecord
	for _, id := range ids {
		if r, ok := s.recs[id]; ok {
			out = append(out, r)
		}
	}
	return out
}

// saveLocked writes the file whole (a temporary file renamed over it).
func (s *driftStore) saveLocked() {
	if s.path == "" {
		return
	}
	data, err := json.Marshal(s.recs)
	if err != nil {
		return
	}
	tmp := s.path + ".tmp"
	if os.WriteFile(tmp, data, 0o600) == nil {
		_ = os.Rename(tmp, s.path)
	}
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
	for _, r := range m.drift.get(ids, accepted) {
		if all || r.Drifted || r.Error != "" {
			out = append(out, r)
		}
	}
	return out, nil
}

// startSchedules starts one loop per schedule block.
func (m *Master) startSchedules() {
	m.drift.path = filepath.Join(m.cfg.DataDir, "drift.json")
	for _, sc := range m.cfg.Schedules {
		m.wg.Add(1)
		go func() { defer m.wg.Done(); m.scheduleLoop(sc) }()
	}
}
