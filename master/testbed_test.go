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

	"github.com/brinecm/brine/internal/tb"
	"github.com/brinecm/brine/master"
	"github.com/brinecm/brine/states"
	"github.com/brinecm/brine/testbed"
)

// TestRealDaemonsInTestbed runs the real binary: a master and three minions in testbed hosts
// (one accepted by the operator, two enrolled by token), a bundle of files, a package and an
// iptables chain applied twice, the job history, a partitioned minion reported as "no return"
// that converges after Heal, and a master killed with -9 and restarted.
func TestRealDaemonsInTestbed(t *testing.T) {
	if testing.Short() {
		t.Skip("testbed test skipped in -short mode")
	}
	c := testbed.NewT(t, "mst", "m1", "m2", "m3")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	repo, err := testbed.DefaultAptRepo()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.EnableApt(ctx, repo); err != nil {
		t.Fatal(err)
	}
	shared := c.SharedDir()
	testbed.InstallBrine(t, shared)
	bin := testbed.HostSharedDir + "/brine"
	mh := c.Host("mst")
	mst, err := mh.Start("master", bin, "master", "--data-dir", "/var/lib/brine/master")
	if err != nil {
		t.Fatal(err)
	}
	// sh runs a command on the master host and returns its output and exit status.
	sh := func(script string) (string, int) {
		out, code, err := mh.Sh(ctx, script)
		if err != nil {
			t.Fatalf("%s: %v", script, err)
		}
		return out, code
	}
	tb.WaitFor(t, 20*time.Second, "master socket", func() bool {
		_, code := sh(bin + " key list")
		return code == 0
	})
	tok := func() string {
		out, code := sh(bin + " key token create --groups app --ttl 1h 2>/dev/null")
		if code != 0 {
			t.Fatalf("token: %s", out)
		}
		return strings.TrimSpace(out)
	}
	os.WriteFile(filepath.Join(shared, "m2.hcl"), []byte(fmt.Sprintf("master = %q\nid = \"m2\"\ntoken = %q\nheartbeat = \"1s\"\nmax_backoff = \"2s\"\n", mh.Addr(), tok())), 0o644)
	os.WriteFile(filepath.Join(shared, "m3.hcl"), []byte(fmt.Sprintf("master = %q\nid = \"m3\"\ntoken = %q\nheartbeat = \"1s\"\nmax_backoff = \"2s\"\n", mh.Addr(), tok())), 0o644)
	os.WriteFile(filepath.Join(shared, "m1.hcl"), []byte(fmt.Sprintf("master = %q\nid = \"m1\"\ngroups = [\"app\"]\nheartbeat = \"1s\"\nmax_backoff = \"2s\"\n", mh.Addr())), 0o644)
	// The minions are brine-minion, as hosts run it (InstallBrine puts it beside brine).
	for _, id := range []string{"m1", "m2", "m3"} {
		if _, err := c.Host(id).Start("minion", testbed.HostSharedDir+"/brine-minion", "-c", testbed.HostSharedDir+"/"+id+".hcl", "--data-dir", "/var/lib/brine/minion"); err != nil {
			t.Fatal(err)
		}
	}
	tb.WaitFor(t, 20*time.Second, "m1 pending", func() bool {
		out, _ := sh(bin + " key list")
		return strings.Contains(out, "pending") && strings.Contains(out, "m1")
	})
	if out, code := sh(bin + " key accept m1 --groups app"); code != 0 {
		t.Fatalf("accept: %s", out)
	}
	tb.WaitFor(t, 30*time.Second, "three minions answer", func() bool {
		_, code := sh(bin + " ping group:app --timeout 3s")
		return code == 0
	})

	bdir := filepath.Join(shared, "bundle")
	os.MkdirAll(bdir, 0o755)
	os.WriteFile(filepath.Join(bdir, "main.hcl"), []byte(`
file "motd" {
  path    = "/etc/motd"
  content = "managed by brine on ${minion.id}\n"
}
package "brine-hello" {}
iptables_chain "filter/BRINE-IN" {
  rule { args = "-p tcp --dport 22 -j ACCEPT" }
}
`), 0o644)
	apply := bin + " apply group:app " + testbed.HostSharedDir + "/bundle --timeout 60s 2>&1"
	out, code := sh(apply)
	if code != 0 {
		t.Fatalf("first apply exit %d:\n%s", code, out)
	}
	out, code = sh(apply + " --json")
	if code != 0 {
		t.Fatalf("second apply exit %d:\n%s", code, out)
	}
	var jid string
	returns := 0
	for _, line := range strings.Split(out, "\n") {
		var ev master.Event
		if json.Unmarshal([]byte(line), &ev) != nil {
			continue
		}
		if ev.Event == "published" {
			jid = ev.JID
		}
		if ev.Event == "return" {
			returns++
			if c := counts(t, *ev.Return); c[states.StatusChanged] != 0 || c[states.StatusOK] != 3 {
				t.Fatalf("second apply on %s: %v", ev.Return.Minion, c)
			}
		}
	}
	if returns != 3 || jid == "" {
		t.Fatalf("second apply: %d returns\n%s", returns, out)
	}
	out, code = sh(bin + " jobs show " + jid + " --json")
	var d master.JobDetail
	if code != 0 || json.Unmarshal([]byte(out), &d) != nil || len(d.Returns) != 3 || len(d.Missing) != 0 {
		t.Fatalf("jobs show: %d %s", code, out)
	}

	// A partitioned minion is reported as "no return"; after Heal it converges.
	if err := c.Partition("m3"); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(bdir, "main.hcl"), []byte(`
file "motd" {
  path    = "/etc/motd"
  content = "managed by brine on ${minion.id}, v2\n"
}
`), 0o644)
	out, code = sh(bin + " apply group:app " + testbed.HostSharedDir + "/bundle --timeout 5s")
	if code != 2 || !strings.Contains(out, "m3: no return") {
		t.Fatalf("partitioned apply exit %d:\n%s", code, out)
	}
	if err := c.Heal("m3"); err != nil {
		t.Fatal(err)
	}
	tb.WaitFor(t, 60*time.Second, "m3 back", func() bool {
		_, code := sh(bin + " ping m3 --timeout 2s")
		return code == 0
	})
	if out, code = sh(bin + " apply group:app " + testbed.HostSharedDir + "/bundle --timeout 30s"); code != 0 {
		t.Fatalf("apply after heal exit %d:\n%s", code, out)
	}
	if motd, _, _ := c.Host("m3").Sh(ctx, "cat /etc/motd"); !strings.Contains(motd, "v2") {
		t.Fatalf("m3 did not converge: %q", motd)
	}

	// kill -9 the master and start it again: the history is there and minions come back.
	if err := mst.Kill(); err != nil {
		t.Fatal(err)
	}
	if _, err := mh.Start("master2", bin, "master", "--data-dir", "/var/lib/brine/master"); err != nil {
		t.Fatal(err)
	}
	tb.WaitFor(t, 60*time.Second, "minions back after master restart", func() bool {
		_, code := sh(bin + " ping '*' --timeout 2s")
		return code == 0
	})
	if out, code = sh(bin + " jobs show " + jid); code != 0 || strings.Count(out, "no return") != 0 {
		t.Fatalf("history after kill -9: %d %s", code, out)
	}
}
