package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/brinecm/brine/capture"
	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/testbed"
)

// The master-side capture round trip, for real: three testbed hosts set up by hand (a file all
// share, one each of their own, one that the two hosts of group web share) run real minions of
// a real master; `brine capture` writes a common bundle, group-web, one per host and site.hcl,
// and a dry-run converge of that site on the same hosts changes nothing. Then the capture joins
// an existing site with a group by id and fact (old2 and old3 share a file that key groups do
// not make shared) and an assign of its own bundle: in place (the out dir holds the site) and
// into a new directory (--site): the split has group-back, site.hcl keeps the site's text, and
// the converge of the result changes nothing either.
func TestCaptureThroughMaster(t *testing.T) {
	if testing.Short() {
		t.Skip("testbed test skipped in -short mode")
	}
	c := testbed.NewT(t, "mst", "old1", "old2", "old3")
	mst, sock := startTestbedMaster(t, c, c.Host("mst"))
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	for _, h := range []*testbed.Host{c.Host("old1"), c.Host("old2"), c.Host("old3")} {
		setup := fmt.Sprintf(`set -e
mkdir -p /etc/legacy
printf 'listen = 8080\nworkers = 4\n' > /etc/legacy/app.conf
printf 'seed = %d\n' > /etc/legacy/own.conf
printf 'role = %s\n' > /etc/legacy/role.conf
printf 'tier = %s\n' > /etc/legacy/tier.conf
printf 'mon\n' > /etc/legacy/mon.conf
cat > /etc/brine-minion.hcl <<EOF
id = %q
master = %q
heartbeat = "1s"
max_backoff = "1s"
EOF`, len(h.Name())*int(h.Name()[3]), map[string]string{"old1": "web", "old2": "db", "old3": "web"}[h.Name()],
			map[string]string{"old1": "front", "old2": "back", "old3": "back"}[h.Name()], h.Name(), c.Host("mst").Addr())
		if out, code, err := h.Sh(ctx, setup); err != nil || code != 0 {
			t.Fatalf("setup %s: %d %v %s", h.Name(), code, err, out)
		}
		if _, err := h.Start("minion", testbed.HostSharedDir+"/brine", "minion", "-c", "/etc/brine-minion.hcl"); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		brine(t, "key", "accept", "old[13]", "--groups", "web", "--socket", sock)
		brine(t, "key", "accept", "old2", "--groups", "db", "--socket", sock)
		if out, _, code := brine(t, "ping", "old*", "--socket", sock, "--timeout", "3s"); code == 0 && strings.Count(out, "pong") == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the minions did not answer:\n%s", mst.Log())
		}
	}

	site := filepath.Join(t.TempDir(), "site")
	out, stderr, code := brine(t, "capture", "old*", "--out", site, "--socket", sock, "--timeout", "2m")
	if code != 0 {
		t.Fatalf("capture: exit %d\n%s%s", code, out, stderr)
	}
	t.Logf("capture:\n%s", out)
	read := func(p string) string {
		b, _ := os.ReadFile(filepath.Join(site, p))
		return string(b)
	}
	if s := read("site.hcl"); !strings.Contains(s, `assign "old1,old2,old3" { bundles = ["common"] }`) ||
		!strings.Contains(s, `assign "old1,old3" { bundles = ["group-web"] }`) || !strings.Contains(s, `assign "old1" { bundles = ["old1"] }`) {
		t.Fatalf("site.hcl:\n%s", s)
	}
	if !strings.Contains(read("common/files.hcl"), `file "/etc/legacy/app.conf"`) || strings.Contains(read("common/files.hcl"), "own.conf") {
		t.Fatalf("common/files.hcl:\n%s", read("common/files.hcl"))
	}
	if !strings.Contains(read("old1/files.hcl"), `file "/etc/legacy/own.conf"`) || !strings.Contains(read("old2/files.hcl"), `file "/etc/legacy/own.conf"`) ||
		!strings.Contains(read("old2/files.hcl"), `file "/etc/legacy/role.conf"`) || strings.Contains(read("old1/files.hcl"), "role.conf") {
		t.Fatalf("old1/files.hcl:\n%s\nold2/files.hcl:\n%s", read("old1/files.hcl"), read("old2/files.hcl"))
	}
	if g := read("group-web/files.hcl"); !strings.Contains(g, `file "/etc/legacy/role.conf"`) || read("group-web/files/etc/legacy/role.conf") != "role = web\n" {
		t.Fatalf("group-web:\n%s", g)
	}

	unchanged := func(site string) {
		t.Helper()
		out, stderr, code := brine(t, "converge", "old*", "--site", site, "--dry-run", "--socket", sock, "--timeout", "2m")
		t.Logf("converge --dry-run --site %s:\n%s%s", site, out, stderr)
		if code != 0 || strings.Count(out, " 0 to change, 0 failed") != 3 || !strings.Contains(out, "3 succeeded, 0 failed, 0 no return") {
			t.Fatalf("converge --dry-run of the captured site %s: exit %d, want 0 to change on every host", site, code)
		}
	}
	unchanged(site)

	// An existing site: group back by id and by fact, its bundle monitoring assigned to it (the
	// file it manages is left out of the capture, so no host gets it twice).
	siteText := `group "back" { target = "old2 or fact:id=old3" }

assign "group:back" { bundles = ["monitoring"] }
`
	existing := func() string {
		dir := filepath.Join(t.TempDir(), "site")
		for p, data := range map[string]string{"site.hcl": siteText, "monitoring/files.hcl": "file \"/etc/legacy/mon.conf\" {\n  content = \"mon\\n\"\n}\n"} {
			if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, p), []byte(data), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	inPlace, source, copied := existing(), existing(), filepath.Join(t.TempDir(), "copied")
	for _, args := range [][]string{{"--out", inPlace}, {"--site", source, "--out", copied}} {
		args = append([]string{"capture", "old*", "--exclude", "/etc/legacy/mon.conf", "--socket", sock, "--timeout", "2m"}, args...)
		out, stderr, code := brine(t, args...)
		if code != 0 {
			t.Fatalf("%v: exit %d\n%s%s", args, code, out, stderr)
		}
	}
	for _, dir := range []string{inPlace, copied} {
		s, _ := os.ReadFile(filepath.Join(dir, "site.hcl"))
		g, _ := os.ReadFile(filepath.Join(dir, "group-back", "files.hcl"))
		m, _ := os.ReadFile(filepath.Join(dir, "monitoring", "files.hcl"))
		if !strings.HasPrefix(string(s), siteText) || !strings.Contains(string(s), `assign "old2,old3" { bundles = ["group-back"] }`) ||
			!strings.Contains(string(s), `assign "old1,old3" { bundles = ["group-web"] }`) || !strings.Contains(string(g), `file "/etc/legacy/tier.conf"`) ||
			!strings.Contains(string(m), "mon.conf") {
			t.Fatalf("%s: site.hcl:\n%s\ngroup-back/files.hcl:\n%s\nmonitoring/files.hcl:\n%s", dir, s, g, m)
		}
		unchanged(dir)
	}
	// The site now has these bundles: a capture into it again is refused, and site.hcl stays.
	before, _ := os.ReadFile(filepath.Join(inPlace, "site.hcl"))
	if out, stderr, code := brine(t, "capture", "old*", "--out", inPlace, "--socket", sock, "--timeout", "2m"); code == 0 || !strings.Contains(stderr, "already has") {
		t.Fatalf("a capture over the site's own bundles: exit %d\n%s%s", code, out, stderr)
	}
	if after, _ := os.ReadFile(filepath.Join(inPlace, "site.hcl")); string(after) != string(before) {
		t.Fatalf("site.hcl changed by a refused capture:\n%s", after)
	}
}

// What a minion returns for a capture is checked before anything is written: a failed capture,
// an unreadable report, no files, more than wire.MaxCaptureFiles bytes or a path that leaves the
// minion's own bundle are refused.
func TestCaptureReturnBounds(t *testing.T) {
	ok, _ := json.Marshal(wire.CaptureReport{Files: map[string][]byte{"files.hcl": []byte("x")}})
	big, _ := json.Marshal(wire.CaptureReport{Files: map[string][]byte{"a": make([]byte, wire.MaxCaptureFiles), "b": []byte("x")}})
	empty, _ := json.Marshal(wire.CaptureReport{})
	escapes, _ := json.Marshal(wire.CaptureReport{Files: map[string][]byte{"files.hcl": []byte("x"), "../base/x.hcl": []byte("x")}})
	hcl, _ := json.Marshal(wire.CaptureReport{Files: map[string][]byte{"a.hcl": make([]byte, capture.MaxHCL/2+1), "b/c.hcl": make([]byte, capture.MaxHCL/2)}})
	for name, tc := range map[string]struct {
		r    wire.Return
		want string
	}{
		"ok":         {wire.Return{Success: true, Report: ok}, ""},
		"failed":     {wire.Return{Error: "capture: too many files"}, "too many files"},
		"unreadable": {wire.Return{Success: true, Report: []byte(`{"files": 5}`)}, "unreadable"},
		"empty":      {wire.Return{Success: true, Report: empty}, "0 files"},
		"too big":    {wire.Return{Success: true, Report: big}, "want 1 to"},
		"escapes":    {wire.Return{Success: true, Report: escapes}, "leaves its bundle"},
		"much HCL":   {wire.Return{Success: true, Report: hcl}, "HCL may hold at most"},
	} {
		files, _, err := captureReturn(tc.r)
		switch {
		case tc.want == "" && (err != nil || len(files) != 1):
			t.Errorf("%s: %v", name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: error %v, want %q", name, err, tc.want)
		}
	}
}
