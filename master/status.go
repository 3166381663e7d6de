package master

import (
	"context"
	"encoding/json"
	"sort"
	"sync"
	"time"

	"github.com/brinecm/brine/internal/wire"
)

// statusScanJobs bounds the jobs `brine status` reads to find each minion's last one.
const statusScanJobs = 2000

// connectedWithinMin is how recent a minion's last authenticated request must be for it to
// count as connected, in a small fleet (minions make one at least every heartbeat, 5 s by
// default).
const connectedWithinMin = 30 * time.Second

// connectedWithin is that bound for a master holding n sessions: a large fleet's minions are
// asked to space their requests by requestEvery(n) (each picks a period in [e, 1.5e)), so two of
// the longest periods, and 30 s at least. A fixed 30 s took every minion of a master past
// 4,000 for disconnected now and then (its requests 20-30 s apart), and past 6,000 most of the
// time: `brine status` showed them gone and schedule rounds left them out.
func connectedWithin(n int) time.Duration {
	return max(connectedWithinMin, 3*requestEvery(n))
}

// seenTable remembers when each minion last made an authenticated request, since the master
// started. It holds one entry per minion that authenticated; entries of keys no longer accepted
// are dropped when status is read.
type seenTable struct {
	mu sync.Mutex // guards at
	at map[string]time.Time
}

func (s *seenTable) note(id string, t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.at == nil {
		s.at = map[string]time.Time{}
	}
	s.at[id] = t
}

// snapshot returns the table, keeping only the ids in keep (nil: all of them).
func (s *seenTable) snapshot(keep map[string]bool) map[string]time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]time.Time{}
	for id, t := range s.at {
		if keep == nil || keep[id] {
			out[id] = t
		} else {
			delete(s.at, id)
		}
	}
	return out
}

// Status reports the minions target names (with site's groups): connection, version, groups and
// their last job among the statusScanJobs most recent.
func (m *Master) Status(ctx context.Context, target string, site *Site) ([]MinionStatus, error) {
	ids, err := m.ResolveTargetIn(target, site)
	if err != nil {
		return nil, err
	}
	if len(ids) == 0 {
		return nil, ErrNoMinions
	}
	infos := map[string]MinionInfo{}
	accepted := map[string]bool{}
	for _, mi := range site.extend(m.Minions()) {
		infos[mi.ID] = mi
		accepted[mi.ID] = true
	}
	seen := m.seen.snapshot(accepted)
	m.mu.Lock()
	sessions := map[string]bool{}
	for id := range m.byMinion {
		sessions[id] = true
	}
	within := connectedWithin(len(m.sessions))
	m.mu.Unlock()
	now := time.Now()
	presence, err := m.Presence()
	if err != nil {
		m.log.Warn("could not read presence leases", "err", err)
	}
	want := map[string]*MinionStatus{}
	out := make([]MinionStatus, len(ids))
	for i, id := range ids {
		mi := infos[id]
		st := MinionStatus{ID: id, Groups: mi.Groups, ClaimedGroups: mi.Claimed, LastSeen: seen[id]}
		if st.Groups == nil {
			st.Groups = []string{}
		}
		st.Connected = sessions[id] && !st.LastSeen.IsZero() && now.Sub(st.LastSeen) < within
		if st.Connected {
			st.Master = m.Name()
		} else if l, ok := presence[id]; ok && l.Master != m.Name() {
			st.Connected, st.Master = true, l.Master // on another master of the store
		}
		if v, ok := mi.Facts["brine_version"].(string); ok {
			st.Version = v
		}
		out[i] = st
		want[id] = &out[i]
	}
	jobs, err := m.store.Jobs(statusScanJobs)
	if err != nil {
		return nil, err
	}
	for _, j := range jobs { // newest first
		if len(want) == 0 || ctx.Err() != nil {
			break
		}
		var mine []string
		for _, id := range j.Minions {
			if _, ok := want[id]; ok {
				mine = append(mine, id)
			}
		}
		if len(mine) == 0 {
			continue
		}
		rets := map[string]wire.Return{}
		if rs, err := m.store.Returns(j.JID); err == nil {
			for _, r := range rs {
				var ret wire.Return
				if json.Unmarshal(r.Data, &ret) == nil {
					rets[r.Minion] = ret
				}
			}
		}
		for _, id := range mine {
			o := &JobOutcome{JID: j.JID, Kind: j.Kind, Target: j.Target, DryRun: j.DryRun, Created: j.Created}
			switch ret, ok := rets[id]; {
			case ok && ret.Success:
				o.Outcome = "succeeded"
			case ok:
				o.Outcome, o.Error = "failed", ret.Error
			case now.Before(j.Expires):
				o.Outcome = "running"
			default:
				o.Outcome = "no return"
			}
			want[id].LastJob = o
			delete(want, id)
		}
	}
	at := make(map[string]int, len(out))
	for i := range out {
		at[out[i].ID] = i
	}
	drift, err := m.driftOf(ids, accepted)
	if err != nil {
		return nil, err
	}
	for _, d := range drift {
		out[at[d.Minion]].LastDrift = &DriftSummary{JID: d.JID, Checked: d.Checked, Drifted: d.Drifted, Changes: len(d.Changes), Error: d.Error}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}
