package master_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/brinecm/brine/control"
	"github.com/brinecm/brine/internal/pgtest"
	"github.com/brinecm/brine/internal/store"
	"github.com/brinecm/brine/internal/tb"
	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/master"
	"github.com/brinecm/brine/minion"
	"github.com/brinecm/brine/pki"
)

// pgMasters starts n masters in process on one fresh PostgreSQL database, sharing the first
// one's master key (copied by the operator, as docs/master.md says).
func pgMasters(t *testing.T, n int) []*master.Master {
	t.Helper()
	url := pgtest.Shared(t).NewDatabase(t)
	first := master.TestMaster(t, func(c *master.Config) { c.Store = url })
	out := []*master.Master{first}
	key, err := os.ReadFile(filepath.Join(first.Config().DataDir, "master.key"))
	if err != nil {
		t.Fatal(err)
	}
	for range n - 1 {
		out = append(out, master.TestMaster(t, func(c *master.Config) {
			c.Store = url
			if err := os.WriteFile(filepath.Join(c.DataDir, "master.key"), key, 0o600); err != nil {
				t.Fatal(err)
			}
		}))
	}
	return out
}

// fleetMinion starts a minion that connects to ms[first] only.
func fleetMinion(t *testing.T, ms []*master.Master, first int, id string, opts ...func(*minion.Config)) *minion.Minion {
	t.Helper()
	return minion.TestMinion(t, ms[first].PublishAddr(), ms[first].RequestAddr(), id, func(c *minion.Config) {
		for _, o := range opts {
			o(c)
		}
	})
}

// presentOn waits until minion id holds a presence lease on master m and returns.
func presentOn(t *testing.T, d time.Duration, any *master.Master, m *master.Master, id string) {
	t.Helper()
	tb.WaitFor(t, d, id+" present on "+m.Name(), func() bool {
		p, err := any.Presence()
		return err == nil && p[id].Master == m.Name()
	})
}

// Masters on one PostgreSQL are one fleet: a minion enrolled and accepted through one is
// known to all; a job submitted on m1 reaches the minions connected to m2 and m3; each return
// is recorded once, and every master sees the same jobs, returns, facts and presence.
func TestMastersShareOneFleet(t *testing.T) {
	ms := pgMasters(t, 3)
	var mins []*minion.Minion
	for i, id := range []string{"a1", "a2", "a3"} {
		mins = append(mins, fleetMinion(t, ms, i, id))
	}
	tb.WaitFor(t, 10*time.Second, "three pending keys", func() bool { total, _ := ms[2].Keys().Pending(""); return total == 3 })
	if ids, err := ms[1].Keys().Accept("a*", []string{"web"}, false); err != nil || len(ids) != 3 {
		t.Fatalf("accept on m2: %v %v", ids, err)
	}
	for i, mn := range mins {
		tb.WaitFor(t, 10*time.Second, mn.ID()+" connected", func() bool { return mn.Status() == "connected" })
		presentOn(t, 10*time.Second, ms[0], ms[i], mn.ID())
	}
	// Facts reported to m2 and m3 are seen by m1 (targeting by facts works on any master).
	tb.WaitFor(t, 10*time.Second, "m1 sees every minion's facts", func() bool {
		return ms[0].Facts("a2") != nil && ms[0].Facts("a3") != nil
	})
	ids, err := ms[0].ResolveTarget("group:web")
	if err != nil || len(ids) != 3 {
		t.Fatalf("resolve on m1: %v %v", ids, err)
	}
	res, err := ms[0].Run(context.Background(), master.JobSpec{Kind: wire.JobPing, Target: "group:web", Minions: ids, Timeout: 30 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Missing) != 0 || len(res.Returns) != 3 {
		t.Fatalf("ping from m1: missing %v, %d returns", res.Missing, len(res.Returns))
	}
	jid := res.JIDs[0]
	for i, m := range ms {
		d, err := m.Job(jid)
		if err != nil || len(d.Returns) != 3 || len(d.Missing) != 0 {
			t.Fatalf("m%d: job %s: %+v %v", i+1, jid, d, err)
		}
		rs, _ := m.Store().Returns(jid)
		if len(rs) != 3 {
			t.Fatalf("m%d: %d returns recorded for 3 minions", i+1, len(rs))
		}
	}
	// `brine key list` on m1 says where each minion is connected, and `brine jobs` on m2 lists
	// the job m1 ran.
	r, err := ms[0].Client().KeyList(context.Background(), control.KeyListRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range r.Keys {
		want := map[string]string{"a1": ms[0].Name(), "a2": ms[1].Name(), "a3": ms[2].Name()}[k.ID]
		if k.Master != want || r.Master != ms[0].Name() {
			t.Fatalf("key list on m1: %s on %q, want %q", k.ID, k.Master, want)
		}
	}
	if jobs, err := ms[1].Store().Jobs(10); err != nil || len(jobs) != 1 || jobs[0].JID != jid {
		t.Fatalf("jobs on m2: %+v %v", jobs, err)
	}
	// And the other way round: a job from m3 reaches the minion on m1.
	res, err = ms[2].Run(context.Background(), master.JobSpec{Kind: wire.JobPing, Target: "a1", Minions: []string{"a1"}, Timeout: 30 * time.Second}, nil)
	if err != nil || len(res.Missing) != 0 {
		t.Fatalf("ping a1 from m3: %+v %v", res, err)
	}
}

// A second master with another key refuses to start on the store: every master of a fleet
// signs with the key minions pinned.
func TestSecondMasterWithOtherKeyRefused(t *testing.T) {
	url := pgtest.Shared(t).NewDatabase(t)
	master.TestMaster(t, func(c *master.Config) { c.Store = url })
	cfg, diags := master.LoadConfig("", t.TempDir())
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	cfg.Store = url
	m, err := master.New(cfg, nil)
	if err == nil {
		m.Close()
		t.Fatal("a master with another key started on the fleet's store")
	}
	if !errors.Is(err, store.ErrOtherIdentity) {
		t.Fatalf("err = %v", err)
	}
}

// runFleetMinion runs a minion that lists every master of ms, until the returned stop.
func runFleetMinion(t *testing.T, ms []*master.Master, id, dataDir string, opts ...func(*minion.Config)) (stop func()) {
	t.Helper()
	cfg := minion.Config{Master: "127.0.0.1", ID: id, DataDir: dataDir, Heartbeat: "200ms", MaxBackoff: "300ms",
		FactsFunc: func() map[string]any { return map[string]any{"os": "linux"} }}
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.Fill(); err != nil {
		t.Fatal(err)
	}
	cfg.SetAddrs(ms[0].PublishAddr(), ms[0].RequestAddr())
	for _, m := range ms[1:] {
		cfg.AddAddrs(m.PublishAddr(), m.RequestAddr())
	}
	mn, err := minion.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = mn.Run(ctx) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

// where returns the index in ms of the master minion id holds a lease on, or -1.
func where(ms []*master.Master, via *master.Master, id string) int {
	p, err := via.Presence()
	if err != nil {
		return -1
	}
	for i, m := range ms {
		if p[id].Master == m.Name() {
			return i
		}
	}
	return -1
}

// A minion that lists three masters on one store: a job published by a master that then dies,
// while the minion was away, is delivered by another master when the minion comes back
// (deliveries live in the store), applied once and returned once; then the master the minion is
// connected to goes, and the minion fails over to the last one, which reaches it.
func TestMinionFailsOverAndGetsItsPendingJob(t *testing.T) {
	ms := pgMasters(t, 3)
	dir := t.TempDir()
	stop := runFleetMinion(t, ms, "fo1", dir)
	tb.WaitFor(t, 10*time.Second, "fo1 pending", func() bool { _, ok := ms[0].Keys().Get("fo1"); return ok })
	if _, err := ms[0].Keys().Accept("fo1", nil, false); err != nil {
		t.Fatal(err)
	}
	tb.WaitFor(t, 15*time.Second, "fo1 present", func() bool { return where(ms, ms[0], "fo1") >= 0 })
	stop()

	// m1 publishes a job for fo1, which is away, and dies.
	out := filepath.Join(t.TempDir(), "runs")
	b := bundle(t, map[string]string{"main.hcl": `
exec "count" {
  command = "echo run >> ` + out + `"
}`})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	published := make(chan string, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		ms[0].Run(ctx, master.JobSpec{Kind: wire.JobApply, Target: "fo1", Minions: []string{"fo1"}, Bundle: b, Timeout: 60 * time.Second},
			func(e master.Event) {
				if e.Event == "published" {
					published <- e.JID
				}
			})
	}()
	jid := <-published
	ms[0].Close()
	cancel()
	<-done

	runFleetMinion(t, ms, "fo1", dir)
	tb.WaitFor(t, 30*time.Second, "the job m1 published is returned through another master", func() bool {
		d, err := ms[1].Job(jid)
		return err == nil && len(d.Returns) == 1 && d.Returns["fo1"].Success
	})
	at := where(ms, ms[1], "fo1")
	if at != 1 && at != 2 {
		t.Fatalf("fo1 present on master %d", at)
	}
	if rs, _ := ms[2].Store().Returns(jid); len(rs) != 1 {
		t.Fatalf("%d returns recorded", len(rs))
	}
	if data, _ := os.ReadFile(out); string(data) != "run\n" {
		t.Fatalf("the job ran %q, want exactly once", data)
	}

	// The minion's master goes: it fails over to the remaining one.
	other := 3 - at
	lost := time.Now()
	ms[at].Close()
	tb.WaitFor(t, 30*time.Second, "fo1 failed over", func() bool { return where(ms, ms[other], "fo1") == other })
	t.Logf("failed over in %s", time.Since(lost).Round(time.Millisecond))
	res, err := ms[other].Run(context.Background(), master.JobSpec{Kind: wire.JobPing, Target: "fo1", Minions: []string{"fo1"}, Timeout: 20 * time.Second}, nil)
	if err != nil || len(res.Missing) != 0 {
		t.Fatalf("ping after failover: %+v %v", res, err)
	}
}

// A minion whose master goes moves to the next at once, not at its next heartbeat: with a
// large fleet the master spaces heartbeats by many seconds (15 s at 3,000 minions), and the
// minions of a killed master took that long to notice (bench-multimaster.sh at 9,000).
func TestMinionLeavesALostMasterAtOnce(t *testing.T) {
	ms := pgMasters(t, 2)
	runFleetMinion(t, ms, "lost1", t.TempDir(), func(c *minion.Config) { c.Heartbeat = "60s" })
	tb.WaitFor(t, 10*time.Second, "lost1 pending", func() bool { _, ok := ms[0].Keys().Get("lost1"); return ok })
	if _, err := ms[0].Keys().Accept("lost1", nil, false); err != nil {
		t.Fatal(err)
	}
	at := -1
	tb.WaitFor(t, 15*time.Second, "lost1 in session", func() bool {
		for i, m := range ms {
			if _, ok := m.SessionKeyID("lost1"); ok && where(ms, ms[0], "lost1") == i {
				at = i
			}
		}
		return at >= 0
	})
	time.Sleep(time.Second) // past its first heartbeat: serving
	if _, ok := ms[at].SessionKeyID("lost1"); !ok {
		t.Fatal("lost1 left its master")
	}
	other := 1 - at
	lost := time.Now()
	ms[at].Close()
	tb.WaitFor(t, 10*time.Second, "lost1 on the other master", func() bool { return where(ms, ms[other], "lost1") == other })
	t.Logf("moved in %s", time.Since(lost).Round(time.Millisecond))
}

// Two minions present one enrolment token at once, each to another master: exactly one is
// enrolled, the other stays pending.
func TestTokenEnrolsOnceAcrossMasters(t *testing.T) {
	ms := pgMasters(t, 2)
	tok, _, err := ms[0].Tokens().Create(pki.TokenRequest{Groups: []string{"db"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	withToken := func(c *minion.Config) { c.Token = tok }
	fleetMinion(t, ms, 0, "t1", withToken)
	fleetMinion(t, ms, 1, "t2", withToken)
	tb.WaitFor(t, 15*time.Second, "both minions known", func() bool {
		_, ok1 := ms[1].Keys().Get("t1")
		_, ok2 := ms[0].Keys().Get("t2")
		return ok1 && ok2
	})
	acc := ms[0].Keys().Accepted()
	if len(acc) != 1 {
		t.Fatalf("%d minions enrolled with one token: %v", len(acc), acc)
	}
	if l, _ := ms[1].Tokens().List(); len(l) != 0 {
		t.Fatalf("token not spent: %v", l)
	}
}

// Rejecting a key on one master ends the minion's session on the master it is connected to,
// and with it the session key later jobs would be wrapped for (DESIGN.md invariant 4 across
// masters).
func TestRejectOnOneMasterEndsSession(t *testing.T) {
	ms := pgMasters(t, 2)
	mn := fleetMinion(t, ms, 1, "r1")
	tb.WaitFor(t, 10*time.Second, "r1 pending", func() bool { _, ok := ms[0].Keys().Get("r1"); return ok })
	ms[0].Keys().Accept("r1", nil, false)
	tb.WaitFor(t, 10*time.Second, "r1 connected", func() bool { return mn.Status() == "connected" })
	tb.WaitFor(t, 10*time.Second, "r1 has a session on m2", func() bool { _, ok := ms[1].SessionKeyID("r1"); return ok })
	ids, err := ms[0].Keys().Reject("r1")
	if err != nil || len(ids) != 1 {
		t.Fatal(ids, err)
	}
	ms[0].RemoveMinions(ids, false)
	tb.WaitFor(t, 10*time.Second, "m2 ended r1's session", func() bool { _, ok := ms[1].SessionKeyID("r1"); return !ok })
	tb.WaitFor(t, 10*time.Second, "r1 refused", func() bool { return mn.Status() != "connected" })
}

// PostgreSQL restarts while a job runs on minions of two masters: the masters reconnect, the
// minions keep their returns until a master records them (DESIGN.md invariant 17), and the
// command waiting on m1 gets every return, each recorded once.
func TestPostgresRestartMidJob(t *testing.T) {
	ms := pgMasters(t, 2)
	var mins []*minion.Minion
	for i, id := range []string{"p1", "p2", "p3", "p4"} {
		mins = append(mins, fleetMinion(t, ms, i%2, id))
	}
	tb.WaitFor(t, 10*time.Second, "four pending keys", func() bool { total, _ := ms[0].Keys().Pending(""); return total == 4 })
	ms[0].Keys().Accept("p*", nil, false)
	for _, mn := range mins {
		tb.WaitFor(t, 10*time.Second, mn.ID()+" connected", func() bool { return mn.Status() == "connected" })
	}
	gate := filepath.Join(t.TempDir(), "gate")
	b := bundle(t, map[string]string{"main.hcl": `
exec "wait" {
  command = "while [ ! -e ` + gate + ` ]; do sleep 0.05; done"
}`})
	ids := []string{"p1", "p2", "p3", "p4"}
	type result struct {
		res *master.Result
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := ms[0].Run(context.Background(), master.JobSpec{Kind: wire.JobApply, Target: "p*", Minions: ids, Bundle: b, Timeout: 90 * time.Second}, nil)
		done <- result{res, err}
	}()
	tb.WaitFor(t, 20*time.Second, "the job running everywhere", func() bool {
		for _, mn := range mins {
			if mn.Applied() != 0 {
				return false
			}
		}
		out, _ := exec.Command("pgrep", "-f", "while \\[ ! -e "+gate).Output()
		return len(strings.Fields(string(out))) >= 4
	})
	if err := pgtest.Shared(t).Restart(); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(gate, nil, 0o600) // the applies finish while the database is coming back
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if len(r.res.Missing) != 0 {
		t.Fatalf("missing after the restart: %v", r.res.Missing)
	}
	rs, err := ms[1].Store().Returns(r.res.JIDs[0])
	if err != nil || len(rs) != 4 {
		t.Fatalf("%d returns recorded: %v", len(rs), err)
	}
}

// Peers present one token at the same moment, half of them to each of two masters on one
// store, over the wire: exactly one is enrolled and the token is spent.
func TestConcurrentRedemptionAcrossMasters(t *testing.T) {
	ms := pgMasters(t, 2)
	tok, _, err := ms[0].Tokens().Create(pki.TokenRequest{Groups: []string{"app"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	const n = 24
	clients := make([]*rawClient, n)
	frames := make([][]byte, n)
	for i := range n {
		clients[i] = newRaw(t, ms[i%2], "race-"+strconv.Itoa(i), nil)
		frames[i] = clients[i].authFrame(tok, nil)
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() { defer wg.Done(); <-start; clients[i].send(frames[i]) }()
	}
	close(start)
	wg.Wait()
	accepted := 0
	for i := range n {
		ar, ok := clients[i].authReply()
		if !ok {
			t.Fatalf("client %d: no reply", i)
		}
		if ar.Status == wire.StatusAccepted {
			accepted++
		}
	}
	if accepted != 1 || len(ms[1].Keys().Accepted()) != 1 || liveTokens(t, ms[0]) != 0 {
		t.Fatalf("%d enrolled with one token (%d accepted keys)", accepted, len(ms[1].Keys().Accepted()))
	}
}

// A flood of new ids against two masters on one store is bounded by the store's pending limit,
// counted across masters, and refused without a write beyond it.
func TestPendingFloodBoundedAcrossMasters(t *testing.T) {
	url := pgtest.Shared(t).NewDatabase(t)
	cfg := func(c *master.Config) {
		c.Store, c.PreAuthRatePerSource, c.PreAuthRate, c.MaxPendingPerSource = url, 100000, 100000, 10
	}
	m1 := master.TestMaster(t, cfg)
	key, _ := os.ReadFile(filepath.Join(m1.Config().DataDir, "master.key"))
	m2 := master.TestMaster(t, cfg, func(c *master.Config) { os.WriteFile(filepath.Join(c.DataDir, "master.key"), key, 0o600) })
	refused := 0
	for i, m := range []*master.Master{m1, m2, m1, m2} {
		c := newRaw(t, m, "x", nil)
		for j := range 8 {
			c.id = "flood-" + strconv.Itoa(i) + "-" + strconv.Itoa(j)
			switch ar := c.authAs(""); ar.Status {
			case wire.StatusPending:
			case wire.StatusRefused:
				refused++
			default:
				t.Fatalf("flood auth: %+v", ar)
			}
		}
	}
	total, fromSrc := m2.Keys().Pending("127.0.0.1")
	if total != 10 || fromSrc != 10 || refused != 22 {
		t.Fatalf("flood across masters: %d pending (%d from the source), %d refused; want 10, 10, 22", total, fromSrc, refused)
	}
}

// A master that lost its database publishes nothing (it cannot record the job, and does not
// act on state it cannot read) and says why; when the database is back, it publishes again.
func TestMasterWithoutDatabasePublishesNothing(t *testing.T) {
	ms := pgMasters(t, 1)
	mn := fleetMinion(t, ms, 0, "d1")
	tb.WaitFor(t, 10*time.Second, "d1 pending", func() bool { _, ok := ms[0].Keys().Get("d1"); return ok })
	ms[0].Keys().Accept("d1", nil, false)
	tb.WaitFor(t, 10*time.Second, "d1 connected", func() bool { return mn.Status() == "connected" })
	pg := pgtest.Shared(t)
	pg.Down()
	up := sync.OnceValue(pg.Up)
	t.Cleanup(func() { up() })
	ping := func() (*master.Result, error) {
		return ms[0].Run(context.Background(), master.JobSpec{Kind: wire.JobPing, Target: "d1", Minions: []string{"d1"}, Timeout: 10 * time.Second}, nil)
	}
	tb.WaitFor(t, 30*time.Second, "the master says it lost its database", func() bool {
		_, err := ping()
		return errors.Is(err, master.ErrStoreLost)
	})
	if err := up(); err != nil {
		t.Fatal(err)
	}
	tb.WaitFor(t, 60*time.Second, "a ping through the master again", func() bool {
		res, err := ping()
		return err == nil && len(res.Missing) == 0
	})
}

// DESIGN.md invariant 19 across masters: a job submitted on m1 for x0 (on m1) and x1 (on m2)
// reaches x1 through m2, which seals the signed job from the store itself and wraps its job key
// for x1's session key with m2 only; x2, accepted and connected to m2 but not addressed, finds
// no wrap in any frame either master publishes, and m1 wraps for x0 alone.
func TestCrossMasterJobWrappedOnlyForItsMinions(t *testing.T) {
	ms := pgMasters(t, 2)
	fleetMinion(t, ms, 0, "x0")
	fleetMinion(t, ms, 1, "x1")
	fleetMinion(t, ms, 1, "x2")
	tb.WaitFor(t, 10*time.Second, "three pending keys", func() bool { total, _ := ms[0].Keys().Pending(""); return total == 3 })
	if ids, err := ms[0].Keys().Accept("x*", nil, false); err != nil || len(ids) != 3 {
		t.Fatalf("accept: %v %v", ids, err)
	}
	keyOn := func(m *master.Master, id string) [8]byte {
		var k [8]byte
		tb.WaitFor(t, 10*time.Second, id+" has a session on "+m.Name(), func() bool {
			var ok bool
			k, ok = m.SessionKeyID(id)
			return ok
		})
		return k
	}
	x0, x1, x2 := keyOn(ms[0], "x0"), keyOn(ms[1], "x1"), keyOn(ms[1], "x2")
	if _, ok := ms[0].SessionKeyID("x1"); ok {
		t.Fatal("m1 holds a session for a minion connected to m2")
	}
	on1, on2 := captureTopics(t, ms[0]), captureTopics(t, ms[1])
	res, err := ms[0].Run(context.Background(), master.JobSpec{Kind: wire.JobPing, Target: "x0,x1", Minions: []string{"x0", "x1"}, Timeout: 30 * time.Second}, nil)
	if err != nil || len(res.Missing) != 0 || len(res.Returns) != 2 {
		t.Fatalf("ping from m1: %+v %v", res, err)
	}
	// Every job frame of each master, until the one for its minion has come (the returns are
	// in, so each was published); then what else is queued.
	frames := func(ch chan pubFrame, want [8]byte) []pubFrame {
		var out []pubFrame
		deadline := time.After(10 * time.Second)
		for seen := false; !seen; {
			select {
			case f := <-ch:
				out = append(out, f)
				jb, err := wire.SplitJob(f.body)
				if err != nil {
					t.Fatal(err)
				}
				_, seen = jb.WrapFor(want)
			case <-deadline:
				t.Fatal("no job frame for the addressed minion")
			}
		}
		for {
			select {
			case f := <-ch:
				out = append(out, f)
			default:
				return out
			}
		}
	}
	check := func(name string, fs []pubFrame, minion string, key [8]byte) {
		for _, f := range fs {
			jb, err := wire.SplitJob(f.body)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := jb.WrapFor(key); !ok || jb.Wraps() != 1 || f.topic != wire.TopicMinion(minion) {
				t.Fatalf("%s published a job frame on %q with %d wraps, not only %s's", name, f.topic, jb.Wraps(), minion)
			}
			if _, ok := jb.WrapFor(x2); ok {
				t.Fatalf("%s wrapped the job for x2, which it does not address", name)
			}
		}
	}
	check("m1", frames(on1, x0), "x0", x0)
	check("m2", frames(on2, x1), "x1", x1)
}

// Minions that list the same masters in the same order take them in a random order of their
// own: the minions of a master that goes fail over to both others, instead of all to the next
// one listed. (Where they start proves less: a minion not yet accepted moves on from master to
// master, so the pending phase spreads them too.)
func TestFleetSpreadsOverMasters(t *testing.T) {
	ms := pgMasters(t, 3)
	const n = 48
	ids := make([]string, n)
	for i := range ids {
		ids[i] = "sp" + strconv.Itoa(i)
		runFleetMinion(t, ms, ids[i], t.TempDir()) // every one lists m1, m2, m3 in that order
	}
	tb.WaitFor(t, 30*time.Second, "every key pending", func() bool { total, _ := ms[0].Keys().Pending(""); return total == n })
	if acc, err := ms[0].Keys().Accept("sp*", nil, false); err != nil || len(acc) != n {
		t.Fatalf("accept: %v %v", acc, err)
	}
	via := ms[0] // a master that answers: the one that goes is never asked
	on := func() (count [3]int, placed int) {
		for _, id := range ids {
			if i := where(ms, via, id); i >= 0 {
				count[i]++
				placed++
			}
		}
		return count, placed
	}
	tb.WaitFor(t, 30*time.Second, "every minion present", func() bool { _, placed := on(); return placed == n })
	start, _ := on()
	t.Logf("minions per master at start: %v", start)
	big := 0
	for i, c := range start {
		if c == 0 {
			t.Fatalf("master %d got no minion of %d: %v", i+1, n, start)
		}
		if c > start[big] {
			big = i
		}
	}
	via = ms[(big+1)%3]
	lost := time.Now()
	ms[big].Close()
	var after [3]int
	tb.WaitFor(t, 30*time.Second, "every minion present on a surviving master", func() bool {
		after, _ = on()
		return after[big] == 0 && after[0]+after[1]+after[2] == n
	})
	t.Logf("minions per master after m%d went: %v (%s)", big+1, after, time.Since(lost).Round(time.Millisecond))
	for i, c := range after {
		// Each of the dead master's 16 or more minions (the most of 48 on three) goes on to the
		// next master of its own random order: both survivors get some (1 in 2^15 that one
		// gets none). With the list's order for everyone, all go to the same one.
		if i != big && c <= start[i] {
			t.Fatalf("master %d got none of the %d minions of master %d: %v -> %v", i+1, start[big], big+1, start, after)
		}
	}
}
