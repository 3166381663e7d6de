package master_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/brinecm/brine/control"
	"github.com/brinecm/brine/internal/pgtest"
	"github.com/brinecm/brine/internal/store"
	"github.com/brinecm/brine/internal/tb"
	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/master"
	"github.com/brinecm/brine/minion"
	"github.com/brinecm/brine/pki"
	"github.com/brinecm/brine/testbed"
)

// No split brain (issue 15): what two masters of one store decide at the same moment is
// decided once.

// writeTree writes files (relative path -> content) under a new temporary directory.
func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// pgMastersWith is pgMasters with opts on every master's config; it returns the database too.
func pgMastersWith(t *testing.T, n int, opts ...func(*master.Config)) ([]*master.Master, string) {
	t.Helper()
	url := pgtest.Shared(t).NewDatabase(t)
	cfg := func(c *master.Config) {
		c.Store = url
		for _, o := range opts {
			o(c)
		}
	}
	first := master.TestMaster(t, cfg)
	key, err := os.ReadFile(filepath.Join(first.Config().DataDir, "master.key"))
	if err != nil {
		t.Fatal(err)
	}
	out := []*master.Master{first}
	for range n - 1 {
		out = append(out, master.TestMaster(t, cfg, func(c *master.Config) {
			if err := os.WriteFile(filepath.Join(c.DataDir, "master.key"), key, 0o600); err != nil {
				t.Fatal(err)
			}
		}))
	}
	return out, url
}

// Two masters on one PostgreSQL with the same schedule (every second, no splay: both wake
// together): each round is claimed by one of them and converges the target's minions wherever
// they are connected (s1 on m1, s2 on m2), so each minion runs the schedule once per round, not
// once per master, and every schedule job is one round's.
func TestScheduleOnceAcrossMasters(t *testing.T) {
	runs := t.TempDir()
	site := writeTree(t, map[string]string{
		"site.hcl": `assign "*" { bundles = ["count"] }` + "\n",
		"count/main.hcl": `exec "count" {
  command = "echo run >> ` + runs + `/${minion.id}"
}
`,
	})
	ms, url := pgMastersWith(t, 2, func(c *master.Config) {
		c.Site = site
		c.JobTimeout = "20s"
		c.Schedules = []master.ScheduleConfig{{Name: "keep", Target: "group:sched", Every: "1s"}}
	})
	fleetMinion(t, ms, 0, "s1")
	fleetMinion(t, ms, 1, "s2")
	tb.WaitFor(t, 10*time.Second, "two pending keys", func() bool { total, _ := ms[0].Keys().Pending(""); return total == 2 })
	if ids, err := ms[0].Keys().Accept("s*", nil, false); err != nil || len(ids) != 2 {
		t.Fatalf("accept: %v %v", ids, err)
	}
	presentOn(t, 10*time.Second, ms[1], ms[0], "s1")
	presentOn(t, 10*time.Second, ms[0], ms[1], "s2")
	// Only now does the schedule's target name them: every round from here finds both
	// connected, so none is left for a retry (a job of its own).
	if _, err := ms[1].Keys().SetGroups("s*", []string{"sched"}); err != nil {
		t.Fatal(err)
	}
	count := func(id string) int {
		b, _ := os.ReadFile(filepath.Join(runs, id))
		return strings.Count(string(b), "run\n")
	}
	tb.WaitFor(t, 90*time.Second, "four runs on each minion", func() bool { return count("s1") >= 4 && count("s2") >= 4 })
	for _, m := range ms {
		m.Close()
	}
	st, err := store.OpenPostgres(context.Background(), url, ms[0].Key(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	last, err := st.Rounds().LastRound("keep")
	if err != nil {
		t.Fatal(err)
	}
	jobs, err := st.Jobs().Jobs(1000)
	if err != nil {
		t.Fatal(err)
	}
	perMinion := map[string]int{}
	sched := 0
	for _, j := range jobs {
		if j.StartedBy != "schedule keep" {
			continue
		}
		sched++
		for _, id := range j.Minions {
			perMinion[id]++
		}
	}
	t.Logf("%d rounds claimed (the last by %s), %d schedule jobs, runs: s1 %d, s2 %d", last.N, last.Master, sched, count("s1"), count("s2"))
	if int64(sched) > last.N {
		t.Fatalf("%d schedule jobs in %d rounds: a round ran on both masters", sched, last.N)
	}
	for _, id := range []string{"s1", "s2"} {
		if n := count(id); int64(n) > last.N || n > perMinion[id] {
			t.Fatalf("%s ran %d times in %d rounds (%d jobs addressed it)", id, n, last.N, perMinion[id])
		}
	}
}

// Operators accept on one master and reject on the other the same pending minions, at the same
// moment: every key ends rejected on both (accept takes only a pending key, reject any), and no
// minion keeps a session with either master.
func TestAcceptRejectRaceAcrossMasters(t *testing.T) {
	ms := pgMasters(t, 2)
	ids := []string{"ar0", "ar1", "ar2", "ar3", "ar4", "ar5"}
	for i, id := range ids {
		fleetMinion(t, ms, i%2, id)
	}
	tb.WaitFor(t, 15*time.Second, "six pending keys", func() bool { total, _ := ms[0].Keys().Pending(""); return total == len(ids) })
	var wg sync.WaitGroup
	start := make(chan struct{})
	for _, id := range ids {
		wg.Add(2)
		go func() {
			defer wg.Done()
			<-start
			if _, err := ms[0].Keys().Accept(id, []string{"web"}, false); err != nil {
				t.Error(err)
			}
		}()
		go func() {
			defer wg.Done()
			<-start
			rejected, err := ms[1].Keys().Reject(id)
			if err != nil {
				t.Error(err)
			}
			ms[1].RemoveMinions(rejected, false)
		}()
	}
	close(start)
	wg.Wait()
	for _, id := range ids {
		for i, m := range ms {
			if k, ok := m.Keys().Get(id); !ok || k.State != pki.StateRejected {
				t.Fatalf("m%d: %s is %+v, want rejected", i+1, id, k)
			}
		}
	}
	// A minion accepted for a moment (accept first) may have authenticated: the rejection ends
	// its session on whichever master it is connected to.
	for _, id := range ids {
		tb.WaitFor(t, 15*time.Second, id+" has no session", func() bool {
			_, on1 := ms[0].SessionKeyID(id)
			_, on2 := ms[1].SessionKeyID(id)
			return !on1 && !on2
		})
	}
	if acc := ms[0].Keys().Accepted(); len(acc) != 0 {
		t.Fatalf("accepted after the race: %v", acc)
	}
}

// freeAddr returns a loopback address with a port free at the moment.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// logLines returns the JSON log lines of path, by message.
func logLines(t *testing.T, path string) map[string][]map[string]any {
	t.Helper()
	data, _ := os.ReadFile(path)
	out := map[string][]map[string]any{}
	for _, line := range strings.Split(string(data), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil {
			msg, _ := rec["msg"].(string)
			out[msg] = append(out[msg], rec)
		}
	}
	return out
}

// PostgreSQL stops (a fast shutdown, as pg_ctl stop does) under a real `brine master` process
// while three real minions are in the middle of an apply, and starts again. Meanwhile the master
// publishes nothing (ping and status fail, saying why), brine_store_up is 0, its log says so
// (each kind of store error at most once a minute), and the minions keep the returns of the
// apply, which finish while the database is down, in their outboxes (the master answers "no
// session" to what it cannot record). When the database is back the master resumes by itself:
// the waiting `brine apply` gets every return, each recorded once, the outboxes drain,
// brine_store_up is 1 and `brine status` says the store is up.
func TestDatabaseLostUnderMasterProcess(t *testing.T) {
	if err := pgtest.Available(); err != nil {
		testbed.SkipUnavailable(t, err)
	}
	pg, err := pgtest.StartWith(pgtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pg.Stop)
	url := pg.URL("postgres") // the cluster is this test's own
	bin := testbed.BrineBinary(t)
	dir, err := os.MkdirTemp("", "brmp") // short: the control socket's path is bounded
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	pubAddr, reqAddr, metricsAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	cfg := filepath.Join(dir, "master.hcl")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`data_dir = %q
publish_addr = %q
request_addr = %q
metrics_addr = %q
store = %q
name = "mp"
auto_accept = true
heartbeat = "1s"
`, filepath.Join(dir, "m"), pubAddr, reqAddr, metricsAddr, url)), 0o600)
	logPath := filepath.Join(dir, "master.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	mp := exec.Command(bin, "master", "-c", cfg, "--log-format", "json")
	mp.Stdout, mp.Stderr = logf, logf
	if err := mp.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { mp.Wait(); close(exited) }()
	t.Cleanup(func() {
		mp.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			mp.Process.Kill()
			<-exited
		}
	})
	sock := filepath.Join(dir, "m", "master.sock")
	cli := func(args ...string) (stdout, stderr string, code int) {
		cmd := exec.Command(bin, append(args, "--socket", sock)...)
		var o, e strings.Builder
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		code = cmd.ProcessState.ExitCode()
		if err != nil && code < 0 {
			t.Fatalf("brine %v: %v", args, err)
		}
		return o.String(), e.String(), code
	}
	storeUp := func() string {
		resp, err := http.Get("http://" + metricsAddr + "/metrics")
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		for _, line := range strings.Split(string(body), "\n") {
			if v, ok := strings.CutPrefix(line, "brine_store_up "); ok {
				return v
			}
		}
		return ""
	}
	tb.WaitFor(t, 30*time.Second, "the master's metrics", func() bool { return storeUp() == "1" })

	ids := []string{"db1", "db2", "db3"}
	dataDirs := map[string]string{}
	for _, id := range ids {
		d := t.TempDir()
		dataDirs[id] = d
		mc := minion.Config{Master: "127.0.0.1", ID: id, DataDir: d, Heartbeat: "200ms", MaxBackoff: "500ms"}
		if err := mc.Fill(); err != nil {
			t.Fatal(err)
		}
		mc.SetAddrs(pubAddr, reqAddr)
		mn, err := minion.New(mc, nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = mn.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
	}
	tb.WaitFor(t, 60*time.Second, "ping of three minions through the master process", func() bool {
		out, _, code := cli("ping", "*", "--timeout", "5s")
		return code == 0 && strings.Count(out, "db") >= 3
	})

	marks := t.TempDir()
	gate := filepath.Join(marks, "gate")
	b := writeTree(t, map[string]string{"main.hcl": `exec "wait" {
  command = "touch ` + marks + `/${minion.id}; while [ ! -e ` + gate + ` ]; do sleep 0.05; done"
}
`})
	apply := exec.Command(bin, "apply", "*", b, "--timeout", "180s", "--json", "--socket", sock)
	var applyOut strings.Builder
	apply.Stdout, apply.Stderr = &applyOut, &applyOut
	if err := apply.Start(); err != nil {
		t.Fatal(err)
	}
	applied := make(chan int, 1)
	go func() { apply.Wait(); applied <- apply.ProcessState.ExitCode() }()
	tb.WaitFor(t, 30*time.Second, "the apply running on every minion", func() bool {
		for _, id := range ids {
			if _, err := os.Stat(filepath.Join(marks, id)); err != nil {
				return false
			}
		}
		return true
	})

	pg.Down() // SIGINT: PostgreSQL's fast shutdown, what pg_ctl stop does
	up := sync.OnceValue(pg.Up)
	t.Cleanup(func() { up() })
	tb.WaitFor(t, 30*time.Second, "brine_store_up 0", func() bool { return storeUp() == "0" })
	os.WriteFile(gate, nil, 0o600) // the applies finish while the database is down
	if _, stderr, code := cli("ping", "*", "--timeout", "5s"); code != 1 || !strings.Contains(stderr, "lost its database") {
		t.Fatalf("ping without a database: exit %d: %s", code, stderr)
	}
	for _, args := range [][]string{{"status"}, {"key", "list"}, {"jobs", "list"}} {
		if _, stderr, code := cli(args...); code != 1 || !strings.Contains(stderr, "lost its database") {
			t.Fatalf("%v without a database: exit %d: %s", args, code, stderr)
		}
	}
	// Every minion finished and keeps its return, which the master could not record.
	tb.WaitFor(t, 30*time.Second, "each minion's return in its outbox", func() bool {
		for _, id := range ids {
			if kept, _ := minion.UnsentReturns(dataDirs[id]); len(kept) != 1 {
				return false
			}
		}
		return true
	})
	// The minions try again and again meanwhile: wait until the master refused some of them.
	tb.WaitFor(t, 30*time.Second, "the master telling minions to come back", func() bool {
		l := logLines(t, logPath)
		return len(l["could not read a minion's key; told it to authenticate again"])+len(l["could not serve a request: the store does not answer; the minion will send it again"]) > 0 &&
			len(l["could not authenticate a minion: the key store does not answer"]) > 0
	})

	if err := up(); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	var code int
	select {
	case code = <-applied:
	case <-time.After(150 * time.Second):
		t.Fatalf("apply did not end after the database came back:\n%s", applyOut.String())
	}
	var jid string
	returned := map[string]bool{}
	for _, line := range strings.Split(applyOut.String(), "\n") {
		var ev master.Event
		if json.Unmarshal([]byte(line), &ev) != nil {
			continue
		}
		switch ev.Event {
		case "published":
			jid = ev.JID
		case "return":
			returned[ev.Return.Minion] = ev.Return.Success
		}
	}
	if code != 0 || len(returned) != 3 || !returned["db1"] || !returned["db2"] || !returned["db3"] {
		t.Fatalf("apply across the database's restart: exit %d, returns %v:\n%s", code, returned, applyOut.String())
	}
	t.Logf("the apply had every return %s after PostgreSQL started again", time.Since(back).Round(time.Millisecond))
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM returns WHERE jid = $1`, jid).Scan(&n); err != nil || n != 3 {
		t.Fatalf("%d returns recorded for %s: %v", n, jid, err)
	}
	for _, id := range ids {
		tb.WaitFor(t, 15*time.Second, id+" outbox drained", func() bool {
			kept, err := minion.UnsentReturns(dataDirs[id])
			return err == nil && len(kept) == 0
		})
	}
	tb.WaitFor(t, 30*time.Second, "brine_store_up 1", func() bool { return storeUp() == "1" })
	out, stderr, code := cli("status")
	if first, _, _ := strings.Cut(out, "\n"); code != 0 || !strings.HasPrefix(first, "master mp: store postgres: up") {
		t.Fatalf("status after the database came back: exit %d:\n%s%s", code, out, stderr)
	}
	if _, _, code := cli("ping", "*", "--timeout", "10s"); code != 0 {
		t.Fatal("ping after the database came back failed")
	}
	// The log: the loss and the return once each, and no kind of store error more than once a
	// minute (the test takes less than two).
	l := logLines(t, logPath)
	if len(l["lost the database: publishing no new jobs until it is back"]) != 1 || len(l["the database is back: publishing again"]) != 1 {
		t.Fatalf("log: lost %d, back %d", len(l["lost the database: publishing no new jobs until it is back"]), len(l["the database is back: publishing again"]))
	}
	for msg, recs := range l {
		lvl, _ := recs[0]["level"].(string)
		if lvl != "WARN" && lvl != "ERROR" {
			continue
		}
		t.Logf("%s %q: %d line(s), suppressed %v", lvl, msg, len(recs), recs[len(recs)-1]["suppressed"])
		if len(recs) > 2 {
			t.Errorf("logged %d times: %q", len(recs), msg)
		}
	}
}

// A master whose database answers reads but fails to record a return (a trigger raising an
// error stands for a full disk) answers the minion "no session", not an error: the minion keeps
// the return in its outbox and sends it again, and once the store records returns again it is
// recorded, once. (An error reply would make the minion drop it for good.)
func TestReturnKeptWhenTheStoreCannotRecordIt(t *testing.T) {
	ms, url := pgMastersWith(t, 1)
	dir := t.TempDir()
	runFleetMinion(t, ms, "rk1", dir)
	tb.WaitFor(t, 10*time.Second, "rk1 pending", func() bool { _, ok := ms[0].Keys().Get("rk1"); return ok })
	if _, err := ms[0].Keys().Accept("rk1", nil, false); err != nil {
		t.Fatal(err)
	}
	presentOn(t, 10*time.Second, ms[0], ms[0], "rk1")
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	exec := func(sql string) {
		t.Helper()
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	// nextval is not rolled back with the failed insert: it counts the attempts.
	exec(`CREATE SEQUENCE return_attempts`)
	exec(`CREATE FUNCTION refuse_returns() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN PERFORM nextval('return_attempts'); RAISE EXCEPTION 'could not extend file: No space left on device'; END $$`)
	exec(`CREATE TRIGGER refuse_returns BEFORE INSERT ON returns FOR EACH ROW EXECUTE FUNCTION refuse_returns()`)
	res, err := ms[0].Run(ctx, master.JobSpec{Kind: wire.JobPing, Target: "rk1", Minions: []string{"rk1"}, Timeout: 3 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Missing) != 1 {
		t.Fatalf("a return was recorded by a store that records none: %+v", res)
	}
	jid := res.JIDs[0]
	attempts := func() int64 {
		var n int64
		conn.QueryRow(ctx, `SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM return_attempts`).Scan(&n)
		return n
	}
	tb.WaitFor(t, 30*time.Second, "three attempts to record the return (a minion that stopped trying dropped it)", func() bool { return attempts() >= 3 })
	if kept, err := minion.UnsentReturns(dir); err != nil || len(kept) != 1 {
		t.Fatalf("the minion's outbox after refused deliveries: %v %v", kept, err)
	}
	exec(`DROP TRIGGER refuse_returns ON returns`)
	tb.WaitFor(t, 30*time.Second, "the return recorded", func() bool {
		rs, err := ms[0].Store().Returns(jid)
		return err == nil && len(rs) == 1
	})
	tb.WaitFor(t, 15*time.Second, "the outbox drained", func() bool {
		kept, err := minion.UnsentReturns(dir)
		return err == nil && len(kept) == 0
	})
	if d, err := ms[0].Job(jid); err != nil || len(d.Returns) != 1 || !d.Returns["rk1"].Success {
		t.Fatalf("job after the store came back: %+v %v", d, err)
	}
}

// A schedule on a master whose database stops and starts again runs no round while the
// database is away (it could not record one) and resumes by itself when it is back.
func TestScheduleResumesAfterDatabaseLoss(t *testing.T) {
	if err := pgtest.Available(); err != nil {
		testbed.SkipUnavailable(t, err)
	}
	pg, err := pgtest.StartWith(pgtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pg.Stop)
	runs := t.TempDir()
	site := writeTree(t, map[string]string{
		"site.hcl": `assign "*" { bundles = ["count"] }` + "\n",
		"count/main.hcl": `exec "count" {
  command = "echo run >> ` + runs + `/${minion.id}"
}
`,
	})
	m := master.TestMaster(t, func(c *master.Config) {
		c.Store = pg.URL("postgres")
		c.Site = site
		c.JobTimeout = "10s"
		c.Schedules = []master.ScheduleConfig{{Name: "keep", Every: "1s"}}
	})
	acceptedMinion(t, m, "sr1", nil)
	count := func() int {
		b, _ := os.ReadFile(filepath.Join(runs, "sr1"))
		return strings.Count(string(b), "run\n")
	}
	tb.WaitFor(t, 60*time.Second, "two runs of the schedule", func() bool { return count() >= 2 })
	pg.Down()
	up := sync.OnceValue(pg.Up)
	t.Cleanup(func() { up() })
	tb.WaitFor(t, 30*time.Second, "the master sees its database lost", func() bool { return !m.StoreHealth().Up })
	if h := m.StoreHealth(); h.Kind != "postgres" || h.Error == "" || h.Since.IsZero() {
		t.Fatalf("store health: %+v", h)
	}
	// A control command says why instead of answering from nothing (an empty key list).
	if _, err := m.Client().KeyList(t.Context(), control.KeyListRequest{}); err == nil || !strings.Contains(err.Error(), master.ErrStoreLost.Error()) {
		t.Fatalf("key list without the database: %v", err)
	}
	down := count()
	if err := up(); err != nil {
		t.Fatal(err)
	}
	tb.WaitFor(t, 60*time.Second, "the master sees its database back", func() bool { return m.StoreHealth().Up })
	tb.WaitFor(t, 60*time.Second, "two more runs after the database came back", func() bool { return count() >= down+2 })
	st, err := store.OpenPostgres(context.Background(), pg.URL("postgres"), m.Key(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ran := count() // before the rounds: a round is claimed before its job runs
	if r, err := st.Rounds().LastRound("keep"); err != nil || r.N < int64(ran) || r.Master != m.Name() {
		t.Fatalf("rounds after the loss: %+v %v (%d runs)", r, err, ran)
	}
}

// A master that cannot read its keys does not take them for gone: a scrape of its metrics while
// the database is away (brine_connected_minions reads the accepted keys) does not make it forget
// when each minion was last seen, and brine_store_up says 0, then 1.
func TestDatabaseLossForgetsNobody(t *testing.T) {
	if err := pgtest.Available(); err != nil {
		testbed.SkipUnavailable(t, err)
	}
	pg, err := pgtest.StartWith(pgtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pg.Stop)
	m := master.TestMaster(t, func(c *master.Config) {
		c.Store = pg.URL("postgres")
		c.MetricsAddr = "127.0.0.1:0"
	})
	stop := runStoppableMinion(t, m, "gone1", t.TempDir())
	tb.WaitFor(t, 10*time.Second, "gone1 pending", func() bool { _, ok := m.Keys().Get("gone1"); return ok })
	if _, err := m.Keys().Accept("gone1", nil, false); err != nil {
		t.Fatal(err)
	}
	tb.WaitFor(t, 10*time.Second, "gone1 connected", func() bool { return connected(m, "gone1") })
	stop()
	scrape := func() string {
		resp, err := http.Get("http://" + m.MetricsAddr() + "/metrics")
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body)
	}
	pg.Down()
	up := sync.OnceValue(pg.Up)
	t.Cleanup(func() { up() })
	tb.WaitFor(t, 30*time.Second, "brine_store_up 0", func() bool { return strings.Contains(scrape(), "\nbrine_store_up 0\n") })
	if err := up(); err != nil {
		t.Fatal(err)
	}
	tb.WaitFor(t, 60*time.Second, "brine_store_up 1", func() bool { return strings.Contains(scrape(), "\nbrine_store_up 1\n") })
	st, err := m.Status(context.Background(), "gone1", nil)
	if err != nil || len(st) != 1 || st[0].LastSeen.IsZero() {
		t.Fatalf("status of a minion seen before the database went: %+v %v", st, err)
	}
}
