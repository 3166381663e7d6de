package master_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/brinecm/brine/internal/tb"
	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/master"
	"github.com/brinecm/brine/states"
	"github.com/brinecm/brine/testbed"
)

// siteTree is a states tree with three site groups (one by id glob, one by key group or fact,
// one by id list), overlapping bundles that each add ufw rules, and a bundle for a key group
// that no minion has at first.
var siteTree = map[string]string{
	"site.hcl": `
group "web"  { target = "w*" }
group "db"   { target = "group:dbkey or fact:role=db" }
group "edge" { target = "w1" }

assign "*"           { bundles = ["base"] }
assign "group:web"   { bundles = ["base", "web"] }
assign "group:db"    { bundles = ["db"] }
assign "group:edge"  { bundles = ["web", "edge"] }
assign "group:extra" { bundles = ["extra"] }
`,
	"base/main.hcl": `
file "/etc/brine-groups" {
  content = "${join(",", sort(minion.groups))}\n"
}
ufw {
  default_incoming = "deny"
  enabled          = true
  allow "ssh" {
    port  = "22"
    proto = "tcp"
  }
}
`,
	"web/main.hcl": `
file "/etc/web.conf" {
  content    = templatefile("files/web.tmpl", { id = minion.id })
  depends_on = [file["/etc/brine-groups"]]
}
ufw {
  allow "http" {
    port  = "80"
    proto = "tcp"
  }
}
`,
	"web/files/web.tmpl": "server ${id}\n",
	"db/main.hcl": `
file "/etc/db.conf" { source = "files/db.conf" }
ufw {
  allow "pg" {
    port  = "5432"
    proto = "tcp"
    from  = "10.0.0.0/8"
  }
}
`,
	"db/files/db.conf": "listen *\n",
	"edge/main.hcl": `
ufw {
  allow "https" {
    port  = "443"
    proto = "tcp"
  }
  allow "ssh-too" {
    port  = "22"
    proto = "tcp"
  }
}
`,
	"extra/main.hcl": `file "/etc/extra" { content = "extra\n" }`,
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for n, c := range files {
		p := filepath.Join(dir, filepath.FromSlash(n))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSiteConvergeAndRunInTestbed runs the real binary on testbed hosts: a site converges three
// minions with three bundle sets (one job each), ufw rules of several bundles compose and a
// second converge changes nothing; a key-groups change reaches the next converge; ping sees the
// site's groups; a duplicated address across bundles stops everything before anything is sent;
// run collects output (bounded) and exit codes and exits 2 on a failure.
func TestSiteConvergeAndRunInTestbed(t *testing.T) {
	if testing.Short() {
		t.Skip("testbed test skipped in -short mode")
	}
	c := testbed.NewT(t, "mst", "w1", "w2", "d1")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	shared := c.SharedDir()
	build := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(shared, "brine"), "../cmd/brine")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	bin := testbed.HostSharedDir + "/brine"
	site := testbed.HostSharedDir + "/site"
	writeFiles(t, filepath.Join(shared, "site"), siteTree)
	os.WriteFile(filepath.Join(shared, "master.hcl"), []byte("data_dir = \"/var/lib/brine/master\"\nheartbeat = \"1s\"\nsite = \""+site+"\"\n"), 0o644)
	mh := c.Host("mst")
	if _, err := mh.Start("master", bin, "master", "-c", testbed.HostSharedDir+"/master.hcl"); err != nil {
		t.Fatal(err)
	}
	sh := func(script string) (string, int) {
		t.Helper()
		out, code, err := mh.Sh(ctx, script)
		if err != nil {
			t.Fatalf("%s: %v", script, err)
		}
		return out, code
	}
	brine := func(args string) (string, int) {
		t.Helper()
		// With BRINE_SOCKET the CLI reads no master.hcl: a converge without --site is the
		// master's own site setting.
		return sh("BRINE_SOCKET=/var/lib/brine/master/master.sock " + bin + " " + args + " 2>&1")
	}
	tb.WaitFor(t, 20*time.Second, "master socket", func() bool {
		_, code := brine("key list")
		return code == 0
	})
	for _, id := range []string{"w1", "w2", "d1"} {
		os.WriteFile(filepath.Join(shared, id+".hcl"), []byte(fmt.Sprintf("master = %q\nid = %q\nheartbeat = \"1s\"\nmax_backoff = \"2s\"\n", mh.Addr(), id)), 0o644)
		if _, err := c.Host(id).Start("minion", bin, "minion", "-c", testbed.HostSharedDir+"/"+id+".hcl", "--data-dir", "/var/lib/brine/minion"); err != nil {
			t.Fatal(err)
		}
	}
	tb.WaitFor(t, 60*time.Second, "three minions answer", func() bool {
		brine("key accept --all")
		out, code := brine("ping '*' --timeout 3s")
		return code == 0 && strings.Count(out, "pong") == 3
	})
	if out, code := brine("key groups d1 --groups dbkey"); code != 0 {
		t.Fatalf("key groups: %s", out)
	}

	// Site groups in a ping target: the master reads its configured site.
	out, code := brine("ping group:web --timeout 10s")
	if code != 0 || !strings.Contains(out, "w1: pong") || !strings.Contains(out, "w2: pong") || strings.Contains(out, "d1:") {
		t.Fatalf("ping group:web: exit %d\n%s", code, out)
	}

	// And with --site, the CLI sends the site file.
	out, code = brine("ping group:edge --site " + site + " --timeout 10s")
	if code != 0 || !strings.Contains(out, "w1: pong") || strings.Contains(out, "w2:") {
		t.Fatalf("ping group:edge --site: exit %d\n%s", code, out)
	}

	converge := func(args string) (map[string]wire.Return, []string, int, string) {
		t.Helper()
		out, code := brine("converge " + args + " --timeout 90s --json")
		rets := map[string]wire.Return{}
		var jids []string
		for _, line := range strings.Split(out, "\n") {
			var ev master.Event
			if json.Unmarshal([]byte(line), &ev) != nil {
				continue
			}
			switch ev.Event {
			case "published":
				jids = append(jids, ev.JID)
			case "return":
				rets[ev.Return.Minion] = *ev.Return
			}
		}
		return rets, jids, code, out
	}
	rets, jids, code, out := converge("--site " + site)
	if code != 0 || len(rets) != 3 || len(jids) != 3 {
		t.Fatalf("first converge: exit %d, %d returns, %d jobs (want 3 sets)\n%s", code, len(rets), len(jids), out)
	}
	hostSh := func(id, script string) string {
		t.Helper()
		out, _, err := c.Host(id).Sh(ctx, script)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	for id, want := range map[string][]string{
		"w1": {"edge,web", "server w1"},
		"w2": {"web", "server w2"},
		"d1": {"db,dbkey", "listen *"},
	} {
		got := hostSh(id, "cat /etc/brine-groups /etc/web.conf /etc/db.conf 2>/dev/null")
		for _, w := range want {
			if !strings.Contains(got, w) {
				t.Fatalf("%s: files lack %q:\n%s", id, w, got)
			}
		}
	}
	// The ufw rules of every bundle of a host are in force together.
	for id, want := range map[string][]string{"w1": {"22/tcp", "80/tcp", "443/tcp"}, "w2": {"22/tcp", "80/tcp"}, "d1": {"22/tcp", "5432/tcp"}} {
		st := hostSh(id, "ufw status")
		for _, w := range want {
			if !strings.Contains(st, w) || !strings.Contains(st, "Status: active") {
				t.Fatalf("%s: ufw status lacks %s:\n%s", id, w, st)
			}
		}
		if id != "w1" && strings.Contains(st, "443") {
			t.Fatalf("%s got edge's rule:\n%s", id, st)
		}
	}

	// A second converge changes nothing, ufw included (no flapping between bundles).
	rets, _, code, out = converge("")
	if code != 0 || len(rets) != 3 {
		t.Fatalf("second converge: exit %d\n%s", code, out)
	}
	for id, r := range rets {
		if c := counts(t, r); c[states.StatusChanged] != 0 || c[states.StatusFailed] != 0 {
			t.Fatalf("second converge changed %s: %v\n%s", id, c, out)
		}
	}

	// A key-groups change is seen by the next converge: a new bundle and new minion.groups.
	if out, code := brine("key groups d1 --groups dbkey,extra"); code != 0 {
		t.Fatalf("key groups: %s", out)
	}
	rets, _, code, out = converge("d1")
	if code != 0 || len(rets) != 1 {
		t.Fatalf("converge after key groups: exit %d\n%s", code, out)
	}
	if got := hostSh("d1", "cat /etc/brine-groups /etc/extra"); !strings.Contains(got, "db,dbkey,extra") || !strings.Contains(got, "extra\n") {
		t.Fatalf("d1 did not get its new groups' bundles:\n%s", got)
	}

	// A duplicated address across two bundles of one minion: both files named, nothing sent.
	bad := map[string]string{}
	for k, v := range siteTree {
		bad[k] = v
	}
	bad["db/dup.hcl"] = "\n\nfile \"/etc/web.conf\" { content = \"x\" }\n"
	bad["site.hcl"] += "assign \"d1\" { bundles = [\"web\"] }\n"
	writeFiles(t, filepath.Join(shared, "bad"), bad)
	jobsBefore, _ := brine("jobs list")
	out, code = brine("converge --site " + testbed.HostSharedDir + "/bad")
	if code != 1 || !strings.Contains(out, "Duplicate resource") || !strings.Contains(out, "bad/db/dup.hcl:3") ||
		!strings.Contains(out, "bad/web/main.hcl:2") || !strings.Contains(out, "nothing was sent") {
		t.Fatalf("duplicate across bundles: exit %d\n%s", code, out)
	}
	if jobsAfter, _ := brine("jobs list"); jobsAfter != jobsBefore {
		t.Fatalf("a job was sent for a broken site:\nbefore %s\nafter %s", jobsBefore, jobsAfter)
	}
	// A broken site file stops it too, with its position.
	writeFiles(t, filepath.Join(shared, "bad"), map[string]string{"site.hcl": "group \"x\" { target = \"w* and\" }\n"})
	out, code = brine("converge --site " + testbed.HostSharedDir + "/bad")
	if code != 1 || !strings.Contains(out, "bad/site.hcl:1:") {
		t.Fatalf("broken site file: exit %d\n%s", code, out)
	}

	// run: output and exit status per minion, stdout bounded, history kept, exit 2 on a failure.
	out, code = brine(`run '*' --timeout 30s -- 'cat /etc/brine-groups; echo to-stderr >&2; head -c 70000 /dev/zero | tr "\0" a; test ! -e /etc/db.conf'`)
	if code != 2 {
		t.Fatalf("run: exit %d, want 2\n%s", code, out)
	}
	for _, want := range []string{"d1: exit 1", "w1: exit 0", "w2: exit 0", "edge,web", "to-stderr",
		"[stdout truncated: ", "3 minion(s): 2 succeeded, 1 failed, 0 no return"} {
		if !strings.Contains(out, want) {
			t.Fatalf("run output lacks %q:\n%s", want, out)
		}
	}
	out, code = brine(`run 'group:web' --json --timeout 2s -- 'echo started; sleep 60'`)
	if code != 2 {
		t.Fatalf("run with a timeout: exit %d\n%s", code, out)
	}
	var jid string
	n := 0
	for _, line := range strings.Split(out, "\n") {
		var ev master.Event
		if json.Unmarshal([]byte(line), &ev) != nil {
			continue
		}
		if ev.Event == "published" {
			jid = ev.JID
		}
		if ev.Event == "return" {
			n++
			var rep wire.RunReport
			if err := json.Unmarshal(ev.Return.Report, &rep); err != nil || !rep.TimedOut || rep.Stdout != "started\n" || ev.Return.Success {
				t.Fatalf("timed-out run on %s: %+v %v", ev.Return.Minion, rep, err)
			}
		}
	}
	if n != 2 || jid == "" {
		t.Fatalf("run group:web: %d returns\n%s", n, out)
	}
	out, code = brine("jobs show " + jid)
	if code != 0 || strings.Count(out, "timed out, killed") != 2 || !strings.Contains(out, "run") {
		t.Fatalf("jobs show of a run: exit %d\n%s", code, out)
	}
	if out, _ = brine("jobs list"); !strings.Contains(out, "  converge  ") || !strings.Contains(out, "  run  ") {
		t.Fatalf("jobs list lacks the kinds:\n%s", out)
	}
}
