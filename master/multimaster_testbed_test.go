package master_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/brinecm/brine/internal/pgtest"
	"github.com/brinecm/brine/internal/tb"
	"github.com/brinecm/brine/master"
	"github.com/brinecm/brine/testbed"
)

// TestThreeMasterProcessesKill9 runs the real binary: three masters in testbed hosts on one
// PostgreSQL (the same master key, copied), three minions in testbed hosts listing all three
// masters and enrolled by token. A job from one master reaches the minions wherever they are
// connected; the master holding the most minions is killed with -9 in the middle of the job
// (not the one the command runs on): its minions fail over, and every return arrives and is
// recorded once; each minion ran the job once.
func TestThreeMasterProcessesKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("testbed test skipped in -short mode")
	}
	if err := pgtest.Available(); err != nil {
		testbed.SkipUnavailable(t, err)
	}
	masters := []string{"mst1", "mst2", "mst3"}
	minions := []string{"n1", "n2", "n3"}
	c := testbed.NewT(t, append(append([]string{}, masters...), minions...)...)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	shared := c.SharedDir()
	sock := filepath.Join(shared, "pg")
	if err := os.Mkdir(sock, 0o755); err != nil {
		t.Fatal(err)
	}
	pg, err := pgtest.StartWith(pgtest.Options{SocketDir: sock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pg.Stop)
	url := pg.NewDatabase(t)
	hostURL := strings.Replace(url, "host="+sock, "host="+testbed.HostSharedDir+"/pg", 1)
	testbed.InstallBrine(t, shared)
	bin := testbed.HostSharedDir + "/brine"

	sh := func(host, script string) (string, int) {
		out, code, err := c.Host(host).Sh(ctx, script)
		if err != nil {
			t.Fatalf("%s: %s: %v", host, script, err)
		}
		return out, code
	}
	daemons := map[string]*testbed.Daemon{}
	for i, name := range masters {
		cfg := fmt.Sprintf("store = %q\nname = %q\nheartbeat = \"1s\"\n", hostURL, name)
		os.WriteFile(filepath.Join(shared, name+".hcl"), []byte(cfg), 0o644)
		if i > 0 {
			// One identity: the operator copies the first master's key before the others start.
			key, err := os.ReadFile(filepath.Join(c.Host(masters[0]).Root(), "/var/lib/brine/master/master.key"))
			if err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join(c.Host(name).Root(), "/var/lib/brine/master")
			os.MkdirAll(dir, 0o700)
			if err := os.WriteFile(filepath.Join(dir, "master.key"), key, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		d, err := c.Host(name).Start("master", bin, "master", "-c", testbed.HostSharedDir+"/"+name+".hcl", "--data-dir", "/var/lib/brine/master")
		if err != nil {
			t.Fatal(err)
		}
		daemons[name] = d
		tb.WaitFor(t, 30*time.Second, name+" control socket", func() bool {
			_, code := sh(name, bin+" -c "+testbed.HostSharedDir+"/"+name+".hcl key list")
			return code == 0
		})
	}
	cli := func(name string) string { return bin + " -c " + testbed.HostSharedDir + "/" + name + ".hcl " }
	var addrs []string
	for _, name := range masters {
		addrs = append(addrs, fmt.Sprintf("%q", c.Host(name).Addr()))
	}
	for i, id := range minions {
		// Tokens made on different masters: they are all in the one store.
		tok, code := sh(masters[i], cli(masters[i])+"key token create --id "+id+" --ttl 1h 2>/dev/null")
		if code != 0 {
			t.Fatalf("token: %s", tok)
		}
		cfg := fmt.Sprintf("master = [%s]\nid = %q\ntoken = %q\nheartbeat = \"1s\"\nmax_backoff = \"1s\"\n", strings.Join(addrs, ", "), id, strings.TrimSpace(tok))
		os.WriteFile(filepath.Join(shared, id+".hcl"), []byte(cfg), 0o644)
		if _, err := c.Host(id).Start("minion", bin, "minion", "-c", testbed.HostSharedDir+"/"+id+".hcl", "--data-dir", "/var/lib/brine/minion"); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range minions {
		tb.WaitFor(t, 60*time.Second, "ping "+id+" from mst1", func() bool {
			_, code := sh("mst1", cli("mst1")+"ping "+id+" --timeout 3s")
			return code == 0
		})
	}
	// Where is everyone? The master with the most minions is the victim; the command runs on
	// another one.
	on := func(via string) map[string]string {
		out, code := sh(via, cli(via)+"key list --json")
		var r struct {
			Keys []master.KeyInfo `json:"keys"`
		}
		if code != 0 || json.Unmarshal([]byte(out), &r) != nil {
			t.Fatalf("key list: %s", out)
		}
		m := map[string]string{}
		for _, k := range r.Keys {
			m[k.ID] = k.Master
		}
		return m
	}
	count := map[string]int{}
	for _, mst := range on("mst1") {
		count[mst]++
	}
	victim, runner := masters[0], masters[1]
	for _, name := range masters {
		if count[name] > count[victim] {
			victim = name
		}
	}
	for _, name := range masters {
		if name != victim {
			runner = name
			break
		}
	}
	t.Logf("minions on masters: %v; killing %s, running the job on %s", on(runner), victim, runner)

	gate := testbed.HostSharedDir + "/gate"
	os.MkdirAll(filepath.Join(shared, "job"), 0o755)
	os.WriteFile(filepath.Join(shared, "job", "main.hcl"), []byte(`
exec "slow" {
  command = "echo run >> /var/tmp/brine-runs; while [ ! -e `+gate+` ]; do sleep 0.1; done"
}
`), 0o644)
	done := make(chan int, 1)
	go func() {
		_, code, _ := c.Host(runner).Sh(ctx, cli(runner)+"apply '*' "+testbed.HostSharedDir+"/job --timeout 120s --json > "+testbed.HostSharedDir+"/apply.json 2>&1")
		done <- code
	}()
	tb.WaitFor(t, 30*time.Second, "every minion in the middle of the job", func() bool {
		for _, id := range minions {
			if data, _ := os.ReadFile(filepath.Join(c.Host(id).Root(), "/var/tmp/brine-runs")); len(data) == 0 {
				return false
			}
		}
		return true
	})
	if err := daemons[victim].Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	tb.WaitFor(t, 60*time.Second, "the victim's minions on other masters", func() bool {
		for _, mst := range on(runner) {
			if mst == victim || mst == "" {
				return false
			}
		}
		return true
	})
	t.Logf("failed over %s after the kill", time.Since(killed).Round(time.Millisecond))
	os.WriteFile(filepath.Join(shared, "gate"), nil, 0o644)
	select {
	case code := <-done:
		if code != 0 {
			out, _ := os.ReadFile(filepath.Join(shared, "apply.json"))
			t.Fatalf("apply on %s: exit %d\n%s", runner, code, out)
		}
	case <-time.After(150 * time.Second):
		t.Fatal("apply did not end")
	}
	var jid string
	f, _ := os.ReadFile(filepath.Join(shared, "apply.json"))
	for _, line := range strings.Split(string(f), "\n") {
		var ev master.Event
		if json.Unmarshal([]byte(line), &ev) == nil && ev.Event == "published" {
			jid = ev.JID
		}
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM returns WHERE jid = $1`, jid).Scan(&n); err != nil || n != len(minions) {
		t.Fatalf("%d returns recorded for job %q (%v)", n, jid, err)
	}
	for _, id := range minions {
		if data, _ := os.ReadFile(filepath.Join(c.Host(id).Root(), "/var/tmp/brine-runs")); string(data) != "run\n" {
			t.Fatalf("%s ran the job %q, want once", id, data)
		}
	}
}
