package master_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/brinecm/brine/internal/pgtest"
	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/master"
	"github.com/brinecm/brine/states"
)

// Invariant 24: a compromised minion (a real key, accepted) answers every apply job it is sent with the
// largest return its job lets through, and tries larger ones: the larger ones are refused and not
// stored (counted in brine_returns_refused_total), and the job history stays within its byte
// bound, the oldest jobs going first, so that the honest minion's newest jobs are kept with their
// returns. Both stores: the files (bbolt) and PostgreSQL.
func TestHistoryBoundedAgainstCompromisedMinion(t *testing.T) {
	t.Run("files", func(t *testing.T) { testHistoryBounded(t, "") })
	t.Run("postgres", func(t *testing.T) { testHistoryBounded(t, pgtest.Shared(t).NewDatabase(t)) })
}

func testHistoryBounded(t *testing.T, store string) {
	const budget = 6 << 20
	m := master.TestMaster(t, master.HistoryBytes(budget), func(c *master.Config) { c.MetricsAddr, c.Store = "127.0.0.1:0", store })
	acceptedMinion(t, m, "web1", nil)
	evil := evilMinion(t, m, "evil", nil, nil)
	b := bundle(t, map[string]string{"main.hcl": `file "x" {
  path    = "/nonexistent-brine-test/x"
  content = "x"
}`})

	// apply publishes an apply job to the evil minion and returns its id, and a channel closed
	// when the job's wait is over.
	apply := func() (string, chan struct{}) {
		published := make(chan string, 1)
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, err := m.Run(context.Background(), master.JobSpec{Target: "evil", Minions: []string{"evil"}, Bundle: b, Timeout: time.Minute},
				func(e master.Event) {
					if e.Event == "published" {
						published <- e.JID
					}
				})
			if err != nil {
				t.Error(err)
			}
		}()
		select {
		case jid := <-published:
			return jid, done
		case <-done:
			t.Fatal("the apply job was not published")
			return "", nil
		}
	}
	send := func(ret wire.Return) wire.Reply {
		t.Helper()
		data, _ := json.Marshal(ret)
		evil.send(evil.requestFrame(wire.KindReturn, wire.SignedReturn{Data: data, Sig: evil.key.Sign(wire.DomainReturn, data)}))
		r, ok := evil.replyWithin(time.Minute)
		if !ok {
			t.Fatal("no reply to a return")
		}
		return r
	}
	honest := func() string {
		t.Helper()
		res := run(t, m, master.JobSpec{Kind: wire.JobPing, Target: "web1"})
		if len(res.Returns) != 1 {
			t.Fatalf("ping of web1: %+v", res)
		}
		return res.JIDs[0]
	}

	// Returns larger than an honest minion makes for any bundle: refused, nothing stored.
	jid, done := apply()
	big := strings.Repeat("x", 1<<20)
	for what, ret := range map[string]wire.Return{
		"a 1 MiB error":    {Error: big},
		"a 1 MiB diff":     {Report: mustJSON(states.Report{Results: []states.Result{{Address: "file.x", Type: "file", Status: states.StatusChanged, Diff: big}}})},
		"too many results": {Report: mustJSON(states.Report{Results: make([]states.Result, states.MaxResources+1)})},
	} {
		ret.JID, ret.Minion, ret.Kind = jid, "evil", wire.JobApply
		if r := send(ret); r.OK || !strings.Contains(r.Error, "at most") {
			t.Fatalf("%s: answered %+v, want it refused", what, r)
		}
	}
	if rs, err := m.Store().Returns(jid); err != nil || len(rs) != 0 {
		t.Fatalf("refused returns stored: %d %v", len(rs), err)
	}
	fams := scrape(t, m.MetricsAddr())
	if v, _ := value(fams, "brine_returns_refused_total", "reason=too_large"); v != 3 {
		t.Fatalf("brine_returns_refused_total{reason=too_large} = %v, want 3", v)
	}

	// What it may send: 1 MiB of diagnostics (not cut by the minion) for each of many jobs, more
	// than the history holds, between the honest minion's jobs.
	pad := strings.Repeat("d", 1<<20)
	var evilJobs, honestJobs []string
	for i := range 12 {
		if i > 0 {
			jid, done = apply()
		}
		if r := send(wire.Return{JID: jid, Minion: "evil", Kind: wire.JobApply, Error: "the bundle does not compile on this minion", Diagnostics: pad}); !r.OK {
			t.Fatalf("return %d refused: %s", i, r.Error)
		}
		<-done
		evilJobs = append(evilJobs, jid)
		if i%4 == 3 {
			honestJobs = append(honestJobs, honest())
		}
		m.PruneHistory()
		if n, err := m.Store().HistoryBytes(); err != nil || n > budget {
			t.Fatalf("after return %d the history holds %d bytes (%v), over its bound %d", i, n, err, budget)
		}
	}
	// The oldest went first: the evil minion's first jobs; the newest are kept, the honest
	// minion's last job with its return.
	if _, err := m.Job(evilJobs[0]); err == nil {
		t.Fatal("the oldest job is kept over the bound")
	}
	last := honestJobs[len(honestJobs)-1]
	if d, err := m.Job(last); err != nil || len(d.Returns) != 1 {
		t.Fatalf("the honest minion's newest job: %v", err)
	}
	if d, err := m.Job(evilJobs[len(evilJobs)-1]); err != nil || len(d.Returns) != 1 {
		t.Fatalf("the newest job: %v", err)
	}
	if v, _ := value(scrape(t, m.MetricsAddr()), "brine_job_history_bytes", ""); v <= 0 || v > budget {
		t.Fatalf("brine_job_history_bytes = %v", v)
	}
}
