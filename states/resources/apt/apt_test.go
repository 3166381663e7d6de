package apt

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"

	"time"

	"github.com/brinecm/brine/states"
	"github.com/brinecm/brine/states/resources/restest"
	"github.com/brinecm/brine/testbed"
)

const dpkgStatusFixture = `Package: brine-hello
Status: install ok installed
Priority: optional
Architecture: all
Version: 1.0
Description: hello
 a continuation line: with a colon
 .
Conffiles:
 /etc/brine-hello.conf 0123456789abcdef

Package: brine-badpost
Status: install ok half-configured
Architecture: all
Version: 1.0

Package: gone
Status: deinstall ok config-files
Architecture: amd64
Version: 2:3.4-1

Package: libc6
Status: install ok installed
Architecture: amd64
Version: 2.36-9

Package: libc6
Status: install ok installed
Architecture: i386
Version: 2.36-9
`

func TestParseDpkgStatus(t *testing.T) {
	db, err := parseDpkgStatus(strings.NewReader(dpkgStatusFixture))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name             string
		n                int
		installed, there bool
		version          string
	}{
		{"brine-hello", 1, true, true, "1.0"},
		{"brine-badpost", 1, false, true, "1.0"},
		{"gone", 1, false, false, "2:3.4-1"},
		{"libc6", 2, true, true, "2.36-9"},
		{"libc6:i386", 1, true, true, "2.36-9"},
		{"libc6:arm64", 0, false, false, ""},
		{"nope", 0, false, false, ""},
	} {
		es := db.lookup(tc.name)
		if len(es) != tc.n {
			t.Fatalf("%s: %d entries, want %d: %+v", tc.name, len(es), tc.n, es)
		}
		if tc.n == 0 {
			continue
		}
		if e := es[0]; e.Installed() != tc.installed || e.Present() != tc.there || e.Version != tc.version {
			t.Errorf("%s: %+v installed=%v present=%v", tc.name, e, e.Installed(), e.Present())
		}
	}
}

func TestParseDpkgStatusMachine(t *testing.T) {
	f, err := os.Open(dpkgStatusPath)
	if err != nil {
		testbed.SkipUnavailable(t, fmt.Sprintf("no dpkg database here: %v", err))
	}
	defer f.Close()
	db, err := parseDpkgStatus(f)
	if err != nil {
		t.Fatal(err)
	}
	es := db.lookup("dpkg")
	if len(es) != 1 || !es[0].Installed() || es[0].Version == "" {
		t.Fatalf("dpkg itself: %+v", es)
	}
}

const aptPolicyFixture = `brine-hello:
  Installed: 1.0
  Candidate: 2.0
  Version table:
     2.0 500
        500 file:/srv/brine-apt ./ Packages
 *** 1.0 500
        500 file:/srv/brine-apt ./ Packages
        100 /var/lib/dpkg/status
mail-transport-agent:
  Installed: (none)
  Candidate: (none)
  Version table:
libc6:i386:
  Installed: (none)
  Candidate: 2.36-9
  Version table:
     2.36-9 500
        500 http://deb.debian.org/debian bookworm/main i386 Packages
`

func TestParseAptPolicy(t *testing.T) {
	m := parseAptPolicy([]byte(aptPolicyFixture))
	want := map[string]aptPolicy{
		"brine-hello":          {Installed: "1.0", Candidate: "2.0", Versions: []string{"2.0", "1.0"}},
		"mail-transport-agent": {},
		"libc6:i386":           {Candidate: "2.36-9", Versions: []string{"2.36-9"}},
	}
	if len(m) != len(want) {
		t.Fatalf("got %d packages: %v", len(m), m)
	}
	for n, w := range want {
		g := m[n]
		if g == nil || g.Installed != w.Installed || g.Candidate != w.Candidate || fmt.Sprint(g.Versions) != fmt.Sprint(w.Versions) {
			t.Errorf("%s: got %+v, want %+v", n, g, w)
		}
	}
}

func TestAptErrorLines(t *testing.T) {
	out := `Reading package lists...
Setting up brine-badpost (1.0) ...
brine-badpost: postinst refuses to configure
dpkg: error processing package brine-badpost (--configure):
 installed brine-badpost package post-installation script subprocess returned error exit status 1
Errors were encountered while processing:
 brine-badpost
E: Sub-process /usr/bin/dpkg returned an error code (1)
`
	got := aptErrorLines([]byte(out))
	for _, w := range []string{"postinst refuses to configure", "dpkg: error processing package brine-badpost", "post-installation script subprocess returned error exit status 1", "E: Sub-process"} {
		if !strings.Contains(got, w) {
			t.Errorf("missing %q in:\n%s", w, got)
		}
	}
	if strings.Contains(got, "Reading package lists") {
		t.Errorf("noise kept:\n%s", got)
	}
}

// TestPackageNoChangeRunIsFast plans and applies 200 package resources that are all installed
// on this machine: the dpkg database is read once and apt-cache is never started.
func TestPackageNoChangeRunCallsNoApt(t *testing.T) {
	f, err := os.Open(dpkgStatusPath)
	if err != nil {
		testbed.SkipUnavailable(t, fmt.Sprintf("no dpkg database here: %v", err))
	}
	db, err := parseDpkgStatus(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for n, es := range db {
		if len(es) == 1 && es[0].Installed() && pkgNameRE.MatchString(n) {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	if len(names) < 200 {
		testbed.SkipUnavailable(t, fmt.Sprintf("only %d packages installed here", len(names)))
	}
	var src strings.Builder
	for _, n := range names[:200] {
		fmt.Fprintf(&src, "package %q {}\n", n)
	}
	t.Setenv("PATH", t.TempDir()) // no apt-cache, no apt-get: a call would fail the test
	start := time.Now()
	rep := restest.RunHCL(t, testTypes, src.String(), false)
	d := time.Since(start)
	if c := rep.Counts(); c[states.StatusOK] != 200 {
		t.Fatalf("counts %v; first results %+v", c, rep.Results[:3])
	}
	// How fast is for the benchmarks (BENCHMARKS.md), not for a timed test: this one proves that
	// a no-change run reads dpkg's database and calls no apt tool.
	t.Logf("200 installed packages: compile + check in %s (engine %s)", d, rep.Duration)
}

func TestPackageDiagnostics(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{"package \"nginx\" {\n  state = \"instaled\"\n}", `Did you mean "installed"`},
		{"package \"nginx\" {\n  state = \"latest\"\n  version = \"1.0\"\n}", "contradicts"},
		{"package \"Bad Name\" {}", "not a Debian package name"},
		{"package \"nginx\" {\n  version = \"1.0 evil\"\n}", "not a Debian version"},
		{"package \"nginx\" {\n  stat = \"absent\"\n}", `Did you mean "state"`},
	} {
		restest.WantCompileError(t, testTypes, tc.src, tc.want)
	}
}
