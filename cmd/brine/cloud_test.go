package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/digitalocean/godo"

	"github.com/brinecm/brine/cloud"
	"github.com/brinecm/brine/cloud/dosim"
	"github.com/brinecm/brine/cloud/dosim/testbedboot"
	"github.com/brinecm/brine/control"
	"github.com/brinecm/brine/master"
	"github.com/brinecm/brine/minion"
	"github.com/brinecm/brine/pki"
	"github.com/brinecm/brine/testbed"
)

// tokenRE finds an enrolment token in a droplet's user_data.
var tokenRE = regexp.MustCompile(`(?m)^token\s*=\s*"(brn2-[0-9a-f]{64}-[a-z0-9]+)"`)

// cloudEnv is a DigitalOcean simulator and a cloud.hcl pointing at it, with a bundle "app" that
// writes out/<minion id>.
type cloudEnv struct {
	sim    *dosim.Server
	config string // path of cloud.hcl
	out    string // where the app bundle writes
}

func newCloudEnv(t testing.TB, opts dosim.Options, bundleHCL string) *cloudEnv {
	t.Helper()
	sim := dosim.New(opts)
	url, err := sim.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	t.Setenv(cloud.TokenEnv, sim.Token())
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	if bundleHCL == "" {
		bundleHCL = `file "marker" {
  path    = "` + out + `/${minion.id}"
  content = "converged ${minion.id}\n"
}`
	}
	files := map[string]string{
		"cloud.hcl": `bundle_dir = "bundles"
provider "digitalocean" {
  api_url = "` + url + `"
}
profile "app" {
  region  = "ams3"
  size    = "s-1vcpu-1gb"
  image   = "ubuntu-24-04-x64"
  groups  = ["app"]
  bundles = ["app"]
}
profile "nobundle" {
  region  = "ams3"
  size    = "s-1vcpu-1gb"
  image   = "ubuntu-24-04-x64"
  bundles = ["missing"]
}
`,
		"bundles/app/main.hcl": bundleHCL,
	}
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return &cloudEnv{sim: sim, config: filepath.Join(dir, "cloud.hcl"), out: out}
}

// cloudRun is one `brine cloud` run in the background.
type cloudRun struct {
	stdout, stderr string
	code           int
}

func brineAsync(t *testing.T, args ...string) <-chan cloudRun {
	ch := make(chan cloudRun, 1)
	go func() {
		o, e, c := brine(t, args...)
		ch <- cloudRun{o, e, c}
	}()
	return ch
}

// events decodes the {"event": ...} lines of --json output by droplet.
func events(t *testing.T, out string) (map[string][]cloud.Stage, *cloud.CreateResult) {
	t.Helper()
	stages := map[string][]cloud.Stage{}
	var res *cloud.CreateResult
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var l struct {
			Event  *cloud.Event        `json:"event"`
			Result *cloud.CreateResult `json:"result"`
		}
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("not a JSON line: %q: %v", line, err)
		}
		if l.Event != nil {
			stages[l.Event.Droplet] = append(stages[l.Event.Droplet], l.Event.Stage)
		}
		if l.Result != nil {
			res = l.Result
		}
	}
	return stages, res
}

// The whole create through the real CLI and a real master (in process here), with minions
// started in process from each droplet's user_data, as the bootstrap script would: every
// droplet converges, the CLI exits 0, and no enrolment token shows in the output or the job
// store. The testbed test below does the same with real hosts.
func TestCloudCreateThroughMaster(t *testing.T) {
	m := master.TestMaster(t, func(c *master.Config) { c.BootstrapAddr = "127.0.0.1:0" })
	env := newCloudEnv(t, dosim.Options{ExternalBoot: true}, "") // this test plays the droplets
	sock := m.Client().Path
	names := []string{"web-1", "web-2", "web-3"}
	run := brineAsync(t, append([]string{"cloud", "create", "app", "--json", "-c", env.config, "--socket", sock,
		"--poll-interval", "50ms", "--converge-timeout", "30s"}, names...)...)

	tokens := map[string]string{}
	var r cloudRun
	deadline := time.After(60 * time.Second)
wait:
	for {
		select {
		case r = <-run:
			break wait
		case <-deadline:
			t.Fatal("brine cloud create did not return")
		case <-time.After(20 * time.Millisecond):
		}
		for _, d := range env.sim.Droplets() {
			if _, done := tokens[d.Name]; done {
				continue
			}
			ud, _ := env.sim.UserData(d.Name)
			tok := tokenRE.FindStringSubmatch(ud)
			if tok == nil {
				t.Fatalf("no token in the user_data of %s:\n%s", d.Name, ud)
			}
			tokens[d.Name] = tok[1]
			checkDownload(t, ud)
			minion.TestMinion(t, m.PublishAddr(), m.RequestAddr(), d.Name, func(c *minion.Config) {
				c.Token = tok[1]
				c.MasterFinger = m.Key().Fingerprint()
			})
		}
	}
	if r.code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	stages, res := events(t, r.stdout)
	for _, n := range names {
		want := []cloud.Stage{cloud.StageCreating, cloud.StageActive, cloud.StageEnrolled, cloud.StageConverged}
		if fmt.Sprint(stages[n]) != fmt.Sprint(want) {
			t.Errorf("%s went through %v, want %v", n, stages[n], want)
		}
		if b, err := os.ReadFile(filepath.Join(env.out, n)); err != nil || string(b) != "converged "+n+"\n" {
			t.Errorf("%s not converged: %q %v", n, b, err)
		}
	}
	if res == nil || len(res.Droplets) != 3 {
		t.Fatalf("result %+v", res)
	}
	jobs, _, code := brine(t, "jobs", "list", "--json", "--socket", sock)
	if code != 0 || strings.Count(jobs, `"kind":"apply"`) != 3 {
		t.Fatalf("jobs: exit %d\n%s", code, jobs)
	}
	var list []struct{ JID string }
	_ = json.Unmarshal([]byte(jobs), &list)
	shows := ""
	for _, j := range list {
		out, _, _ := brine(t, "jobs", "show", j.JID, "--json", "--socket", sock)
		shows += out
	}
	for n, tok := range tokens {
		for what, s := range map[string]string{"stdout": r.stdout, "stderr": r.stderr, "jobs": jobs + shows} {
			if strings.Contains(s, tok) {
				t.Errorf("the token of %s is in the CLI's %s", n, what)
			}
		}
	}
}

// checkDownload fetches the binary from the user_data's URL and checks the pinned sha256.
func checkDownload(t *testing.T, ud string) {
	t.Helper()
	url := regexp.MustCompile(`BRINE_URL='([^']+)'`).FindStringSubmatch(ud)
	sum := regexp.MustCompile(`BRINE_SHA256='([0-9a-f]{64})'`).FindStringSubmatch(ud)
	if url == nil || sum == nil {
		t.Fatalf("no URL or sha256 in user_data:\n%s", ud)
	}
	resp, err := http.Get(url[1])
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	h := sha256.New()
	if _, err := io.Copy(h, resp.Body); err != nil || resp.StatusCode != 200 {
		t.Fatalf("download %s: %d %v", url[1], resp.StatusCode, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sum[1] {
		t.Fatalf("downloaded sha256 %s, pinned %s", got, sum[1])
	}
}

// Exit codes: 1 when nothing was made (no master, unknown profile, missing bundle), 0 for a dry
// run, 2 when droplets were made but did not converge; --json events throughout, and the
// enrolment token never in the output.
func TestCloudCreateExitCodes(t *testing.T) {
	env := newCloudEnv(t, dosim.Options{ExternalBoot: true}, "") // droplets "boot" and never enrol
	none := filepath.Join(t.TempDir(), "no-master.sock")

	_, stderr, code := brine(t, "cloud", "create", "app", "web-1", "-c", env.config, "--socket", none)
	if code != 1 || !strings.Contains(stderr, "cannot reach the master") {
		t.Fatalf("no master: exit %d\n%s", code, stderr)
	}
	_, stderr, code = brine(t, "cloud", "create", "ap", "web-1", "-c", env.config, "--socket", none)
	if code != 1 || !strings.Contains(stderr, `did you mean "app"`) {
		t.Fatalf("unknown profile: exit %d\n%s", code, stderr)
	}
	_, stderr, code = brine(t, "cloud", "create", "nobundle", "web-1", "-c", env.config, "--socket", none)
	if code != 1 || !strings.Contains(stderr, `bundle "missing"`) {
		t.Fatalf("missing bundle: exit %d\n%s", code, stderr)
	}
	out, stderr, code := brine(t, "cloud", "create", "app", "web-1", "web-2", "--dry-run", "--json", "-c", env.config, "--socket", none)
	stages, _ := events(t, out)
	if code != 0 || fmt.Sprint(stages["web-1"]) != "[planned]" || fmt.Sprint(stages["web-2"]) != "[planned]" {
		t.Fatalf("dry run: exit %d %v\n%s%s", code, stages, out, stderr)
	}
	if n := len(env.sim.Droplets()); n != 0 {
		t.Fatalf("%d droplets made by runs that should make none", n)
	}

	// A master that issues tokens but whose minions never come: created, not converged.
	m := master.TestMaster(t, func(c *master.Config) { c.BootstrapAddr = "127.0.0.1:0" })
	out, stderr, code = brine(t, "cloud", "create", "app", "web-1", "web-2", "--json", "-c", env.config,
		"--socket", m.Client().Path, "--poll-interval", "20ms", "--converge-timeout", "500ms")
	stages, res := events(t, out)
	if code != 2 || fmt.Sprint(stages["web-1"]) != "[creating active failed]" || res == nil || !strings.Contains(stderr, "created 2 of 2 droplets, 0 converged") {
		t.Fatalf("never enrolled: exit %d %v\n%s%s", code, stages, out, stderr)
	}
	for _, d := range res.Droplets {
		if !d.Created || !strings.Contains(d.Error, "did not enrol") || d.UserDataSHA256 == "" {
			t.Errorf("droplet result %+v", d)
		}
		ud, _ := env.sim.UserData(d.Name)
		tok := tokenRE.FindStringSubmatch(ud)
		if tok == nil || strings.Contains(out+stderr, tok[1]) {
			t.Errorf("%s: token missing from user_data or present in the output", d.Name)
		}
	}
	// Names in use are refused before anything is made.
	_, stderr, code = brine(t, "cloud", "create", "app", "web-2", "web-3", "-c", env.config, "--socket", m.Client().Path)
	if code != 1 || !strings.Contains(stderr, "names already in use") || len(env.sim.Droplets()) != 2 {
		t.Fatalf("names in use: exit %d\n%s", code, stderr)
	}

	// A simulator whose droplets never boot (`brine cloud sim` without --boot testbed): create
	// says so at once and makes nothing, instead of waiting 15 minutes for an enrolment.
	noboot := newCloudEnv(t, dosim.Options{}, "")
	_, stderr, code = brine(t, "cloud", "create", "app", "web-1", "-c", noboot.config, "--socket", m.Client().Path)
	if code != 1 || !strings.Contains(stderr, "droplets never boot") || !strings.Contains(stderr, "brine cloud sim --boot testbed") ||
		len(noboot.sim.Droplets()) != 0 {
		t.Fatalf("never-booting simulator: exit %d, %d droplets\n%s", code, len(noboot.sim.Droplets()), stderr)
	}
}

// destroy refuses droplets without the brine tag, and without --yes off a terminal; it deletes
// the minion keys of the droplets it destroyed, and says so when it cannot.
func TestCloudDestroyRefusesUntagged(t *testing.T) {
	env := newCloudEnv(t, dosim.Options{}, "")
	m := master.TestMaster(t)
	for _, id := range []string{"ours", "ours2", "handmade"} {
		k, _ := pki.GenerateKeyPair()
		if _, err := m.Keys().Present(pki.Presentation{ID: id, Key: k.Pub}, true, nil); err != nil {
			t.Fatal(err)
		}
	}
	c, err := cloud.NewClient(cloud.ClientOptions{Token: cloud.NewToken(env.sim.Token()), APIURL: env.sim.URL(), RequestsPerMinute: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, _, err := c.Godo().Droplets.Create(ctx, &godo.DropletCreateRequest{Name: "handmade", Region: "ams3",
		Size: "s-1vcpu-1gb", Image: godo.DropletCreateImage{Slug: "ubuntu-24-04-x64"}}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"ours", "ours2"} {
		if _, _, err := c.Godo().Droplets.Create(ctx, &godo.DropletCreateRequest{Name: name, Region: "ams3",
			Size: "s-1vcpu-1gb", Image: godo.DropletCreateImage{Slug: "ubuntu-24-04-x64"}, Tags: []string{cloud.ManagedTag}}); err != nil {
			t.Fatal(err)
		}
	}
	_, stderr, code := brine(t, "cloud", "destroy", "handmade", "--yes", "-c", env.config, "--socket", m.Client().Path)
	if code != 1 || !strings.Contains(stderr, "brine") {
		t.Fatalf("untagged: exit %d\n%s", code, stderr)
	}
	out, stderr, code := brine(t, "cloud", "destroy", "ours", "-c", env.config)
	if code != 1 || !strings.Contains(stderr, "--yes") {
		t.Fatalf("no --yes off a terminal: exit %d\n%s%s", code, out, stderr)
	}
	if n := len(env.sim.Droplets()); n != 3 {
		t.Fatalf("%d droplets left, want 3", n)
	}
	out, stderr, code = brine(t, "cloud", "destroy", "ours", "--yes", "--json", "-c", env.config, "--socket", m.Client().Path)
	if code != 0 || !strings.Contains(out, `"ours"`) || !strings.Contains(out, `"keys_deleted":["ours"]`) {
		t.Fatalf("tagged: exit %d\n%s%s", code, out, stderr)
	}
	if _, ok := m.Keys().Get("ours"); ok {
		t.Fatal("the destroyed droplet's minion key is still on the master")
	}
	if _, ok := m.Keys().Get("handmade"); !ok {
		t.Fatal("a key of a droplet not destroyed was deleted")
	}
	// No master to reach: the droplet goes, the key is left, and the operator is told (exit 2).
	out, stderr, code = brine(t, "cloud", "destroy", "ours2", "--yes", "-c", env.config, "--socket", filepath.Join(t.TempDir(), "none.sock"))
	if code != 2 || !strings.Contains(out, "destroyed ours2") || !strings.Contains(stderr, "brine key delete") || !strings.Contains(stderr, "ours2") {
		t.Fatalf("destroy without a master: exit %d\n%s%s", code, out, stderr)
	}
	ds := env.sim.Droplets()
	if len(ds) != 1 || ds[0].Name != "handmade" {
		t.Fatalf("left: %+v", ds)
	}
}

// testbedCloud is a real `brine master` (this package's binary) in testbed host "mst" with its
// bootstrap endpoint on, its control socket reachable from here through the shared directory,
// and a simulator whose droplets boot as testbed hosts that run their user_data.
type testbedCloud struct {
	*cloudEnv
	c      *testbed.Cluster
	master *testbed.Daemon
	booter *testbedboot.Booter
	sock   string
}

func newTestbedCloud(t testing.TB) *testbedCloud {
	t.Helper()
	c := testbed.NewSystemdT(t, "mst") // droplets are systemd hosts: the minion runs from its unit
	d, sock := startTestbedMaster(t, c, c.Host("mst"))
	booter := testbedboot.New(c)
	env := newCloudEnv(t, dosim.Options{Booter: booter}, `file "marker" {
  path    = "/etc/brine-converged"
  content = "converged ${minion.id} in ${join(",", minion.groups)}\n"
}`)
	return &testbedCloud{cloudEnv: env, c: c, master: d, booter: booter, sock: sock}
}

// startTestbedMaster copies this package's binary into c's shared directory and starts a
// real `brine master` in mh with its bootstrap endpoint on mh's address and its data under the
// shared directory; it returns once the control socket (reachable from here) answers.
func startTestbedMaster(t testing.TB, c *testbed.Cluster, mh *testbed.Host) (*testbed.Daemon, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	shared := c.SharedDir()
	bin, err := os.ReadFile(brineBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(shared, "brine"), bin, 0o755); err != nil {
		t.Fatal(err)
	}
	hostBin := testbed.HostSharedDir + "/brine"
	cfg := fmt.Sprintf("data_dir = %q\nbootstrap_addr = %q\nheartbeat = \"1s\"\n", testbed.HostSharedDir+"/master", mh.Addr()+":4580")
	if err := os.WriteFile(filepath.Join(shared, "master.hcl"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := mh.Start("master", hostBin, "master", "-c", testbed.HostSharedDir+"/master.hcl")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(shared, "master", "master.sock")
	for {
		cl := &control.Client{Path: sock}
		if _, err := cl.Bootstrap(ctx); err == nil {
			break
		}
		if ctx.Err() != nil || !d.Running() {
			t.Fatalf("the master did not come up:\n%s", d.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return d, sock
}

// The end-to-end test: `brine cloud create app web-1 web-2 web-3` (the real CLI)
// against the simulator, whose droplets become testbed hosts that download the real binary
// from the real master's bootstrap endpoint, check its sha256, enrol with their single-use
// tokens and are converged by the master; with 429s and 5xx injected on the way. The tokens
// appear nowhere in the CLI's output, the master's log or the job store, and a token used once
// is refused the second time. A squatter (a real minion process) registers web-1 before the
// droplet exists: it burns nothing, web-1 enrols with its token, and the squatter is denied.
func TestCloudCreateInTestbed(t *testing.T) {
	if testing.Short() {
		t.Skip("testbed test skipped in -short mode")
	}
	tc := newTestbedCloud(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// The cloud misbehaves: a 429 and a 500 on create (brine looks the name up before trying
	// again), 503s on the status polls.
	tc.sim.Inject(dosim.Fault{Method: "POST", Path: "/v2/droplets", Status: 429, RetryAfter: 200 * time.Millisecond})
	tc.sim.Inject(dosim.Fault{Method: "POST", Path: "/v2/droplets", Status: 500})
	tc.sim.Inject(dosim.Fault{Method: "GET", Path: "/v2/droplets", Status: 503, Times: 2})

	mh := tc.c.Host("mst")
	listKeys := func() []master.KeyInfo {
		o, _, _ := brine(t, "key", "list", "--json", "--socket", tc.sock)
		var kl struct{ Keys []master.KeyInfo }
		_ = json.Unmarshal([]byte(o), &kl)
		return kl.Keys
	}
	squat := "id = \"web-1\"\nmaster = \"127.0.0.1\"\ndata_dir = \"/tmp/squatter\"\ngroups = [\"admin\"]\nmax_backoff = \"1s\"\n"
	if err := os.WriteFile(filepath.Join(tc.c.SharedDir(), "squatter.hcl"), []byte(squat), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := mh.Start("squatter", testbed.HostSharedDir+"/brine", "minion", "-c", testbed.HostSharedDir+"/squatter.hcl"); err != nil {
		t.Fatal(err)
	}
	var squatFinger string
	for deadline := time.Now().Add(20 * time.Second); squatFinger == ""; time.Sleep(100 * time.Millisecond) {
		for _, k := range listKeys() {
			if k.ID == "web-1" && k.State == "pending" {
				squatFinger = k.Finger
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the squatter never showed up as pending:\n%s", tc.master.Log())
		}
	}

	names := []string{"web-1", "web-2", "web-3"}
	start := time.Now()
	out, stderr, code := brine(t, append([]string{"cloud", "create", "app", "--json", "-c", tc.config, "--socket", tc.sock,
		"--poll-interval", "100ms", "--converge-timeout", "2m"}, names...)...)
	t.Logf("brine cloud create of %d droplets in testbed hosts: %v", len(names), time.Since(start).Round(time.Millisecond))
	if code != 0 {
		for _, n := range names {
			t.Logf("cloud-init of %s:\n%s", n, tc.booter.CloudInitLog(n))
		}
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, stderr)
	}
	stages, res := events(t, out)
	if res == nil || len(tc.sim.Droplets()) != 3 {
		t.Fatalf("result %+v, %d droplets (never two with one name)", res, len(tc.sim.Droplets()))
	}
	tokens := map[string]string{}
	for _, n := range names {
		if last := stages[n]; len(last) == 0 || last[len(last)-1] != cloud.StageConverged {
			t.Errorf("%s: stages %v", n, stages[n])
		}
		h := tc.c.Host(n)
		if h == nil {
			t.Fatalf("no testbed host for %s", n)
		}
		got, _, err := h.Sh(ctx, "cat /etc/brine-converged; sha256sum /usr/bin/brine-minion")
		if err != nil || !strings.HasPrefix(got, "converged "+n+" in app\n") {
			t.Errorf("%s: %q %v", n, got, err)
		}
		ud, _ := tc.sim.UserData(n)
		m := tokenRE.FindStringSubmatch(ud)
		if m == nil {
			t.Fatalf("no token in the user_data of %s", n)
		}
		tokens[n] = m[1]
		if sum := regexp.MustCompile(`BRINE_SHA256='([0-9a-f]{64})'`).FindStringSubmatch(ud); sum == nil || !strings.Contains(got, sum[1]) {
			t.Errorf("%s: the installed binary is not the pinned one: %q", n, got)
		}
	}
	if n := tc.sim.Requests("POST", "/v2/droplets"); n < 5 {
		t.Errorf("only %d create requests: the injected faults were not hit", n)
	}

	// The squatter's key is denied; web-1 is the droplet's key, with the profile's groups.
	sawDenied := false
	for _, k := range listKeys() {
		if k.ID == "web-1" && k.Finger == squatFinger && k.State != "denied" {
			t.Fatalf("the squatter's key: %+v", k)
		}
		if k.ID == "web-1" && k.State == "denied" && k.Finger == squatFinger {
			sawDenied = true
		}
		if k.ID == "web-1" && k.State == "accepted" && (k.Finger == squatFinger || strings.Contains(strings.Join(k.Groups, ","), "admin")) {
			t.Fatalf("the squatter's key or its groups were accepted: %+v", k)
		}
	}
	if !sawDenied {
		t.Fatalf("the squatter's key is not on record as denied: %+v", listKeys())
	}

	// A token used once is refused the second time: an intruder on the master's host presents
	// web-1's token and stays pending.
	intruder := fmt.Sprintf("id = \"intruder\"\nmaster = \"127.0.0.1\"\ndata_dir = \"/tmp/intruder\"\ntoken = %q\n", tokens["web-1"])
	if err := os.WriteFile(filepath.Join(tc.c.SharedDir(), "intruder.hcl"), []byte(intruder), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := mh.Start("intruder", testbed.HostSharedDir+"/brine", "minion", "-c", testbed.HostSharedDir+"/intruder.hcl"); err != nil {
		t.Fatal(err)
	}
	var keys []master.KeyInfo
	for deadline := time.Now().Add(20 * time.Second); ; {
		o, _, _ := brine(t, "key", "list", "--json", "--socket", tc.sock)
		var kl struct{ Keys []master.KeyInfo }
		_ = json.Unmarshal([]byte(o), &kl)
		keys = kl.Keys
		found := false
		for _, k := range keys {
			if k.ID == "intruder" {
				found = true
				if k.State != "pending" {
					t.Fatalf("a used token enrolled the intruder: %+v", k)
				}
			}
		}
		if found && strings.Contains(tc.master.Log(), "enrolment token refused") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the intruder never showed up as pending: %s\n%s", o, tc.master.Log())
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, k := range keys {
		if strings.HasPrefix(k.ID, "web-") && k.State != "denied" && (k.State != "accepted" || strings.Join(k.Groups, ",") != "app") {
			t.Errorf("key %+v", k)
		}
	}

	jobs, _, _ := brine(t, "jobs", "list", "--json", "--socket", tc.sock)
	var list []struct{ JID string }
	_ = json.Unmarshal([]byte(jobs), &list)
	if len(list) != 3 {
		t.Errorf("%d jobs, want 3 (one converge per droplet)", len(list))
	}
	store := jobs
	for _, j := range list {
		o, _, _ := brine(t, "jobs", "show", j.JID, "--json", "--socket", tc.sock)
		store += o
	}
	mlog := tc.master.Log()
	for n, tok := range tokens {
		for what, s := range map[string]string{"CLI output": out + stderr, "master log": mlog, "job store": store} {
			if strings.Contains(s, tok) {
				t.Errorf("the token of %s is in the %s", n, what)
			}
		}
	}
}

// BenchmarkCloudCreateTestbed times `brine cloud create` to converged through the real master
// in a testbed, for 1 and 10 droplets, zero boot delay (each droplet still boots a testbed
// host, downloads the 18 MB binary and enrols). Run as root:
//
//	go test -run '^$' -bench CloudCreateTestbed -benchtime 3x ./cmd/brine/
func BenchmarkCloudCreateTestbed(b *testing.B) {
	for _, n := range []int{1, 10} {
		b.Run(fmt.Sprintf("droplets=%d", n), func(b *testing.B) {
			tc := newTestbedCloud(b)
			tc.sim.SetDropletLimit(1000)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				args := []string{"cloud", "create", "app", "-c", tc.config, "--socket", tc.sock, "--poll-interval", "50ms"}
				for k := 1; k <= n; k++ {
					args = append(args, fmt.Sprintf("b%d-%d", i, k))
				}
				cmd := exec.Command(brineBin, args...)
				if out, err := cmd.CombinedOutput(); err != nil {
					b.Fatalf("%v\n%s", err, out)
				}
			}
			b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/create")
		})
	}
}

// proc is the real binary running in the background.
type proc struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan struct{} // closed when it exited; then err is set
	err    error
}

// stop interrupts it (as Ctrl-C would) and waits up to d, then kills it.
func (p *proc) stop(d time.Duration) error {
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("did not stop on SIGINT within %v", d)
	}
}

// startProc starts the real binary in the background, its stdout to stdout; the test's cleanup
// stops it.
func startProc(t *testing.T, stdout io.Writer, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(brineBin, args...), stderr: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = stdout, p.stderr
	p.cmd.Env = append(os.Environ(), "NO_COLOR=1")
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		if err := p.stop(30 * time.Second); err != nil && !strings.Contains(err.Error(), "signal") {
			t.Errorf("brine %s: %v", args[0], err)
		}
	})
	return p
}

// syncBuffer is a bytes.Buffer safe for a process writing while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// From the command line only, as an operator would: `brine cloud sim --boot testbed`, a `brine
// master` listening on the bridge it prints, and `brine cloud create` converge a droplet that is
// a systemd testbed host, whose minion the bootstrap installed and runs from the shipped unit.
// Stopping the simulator removes its hosts.
func TestCloudSimBootTestbed(t *testing.T) {
	if testing.Short() {
		t.Skip("testbed test skipped in -short mode")
	}
	if err := testbed.SystemdAvailable(); err != nil {
		testbed.SkipUnavailable(t, err)
	}
	cluster := fmt.Sprintf("simt%d", os.Getpid()%100000)
	t.Cleanup(func() {
		if left := testbed.Leftovers(cluster); len(left) > 0 {
			t.Errorf("the simulator left %v", left)
			_ = testbed.Down(cluster)
		}
	})
	pr, pw := io.Pipe()
	t.Cleanup(func() { pw.Close() })
	sim := startProc(t, pw, "cloud", "sim", "--boot", "testbed", "--boot-delay", "0s", "--json", "--cluster", cluster)
	simErr := sim.stderr
	var info struct{ URL, Token, Boot, Cluster, Bridge string }
	line := make(chan error, 1)
	go func() {
		l, err := bufio.NewReader(pr).ReadString('\n')
		if err == nil {
			err = json.Unmarshal([]byte(l), &info)
		}
		line <- err
		_, _ = io.Copy(io.Discard, pr)
	}()
	select {
	case err := <-line:
		if err != nil {
			t.Fatalf("brine cloud sim: %v\n%s", err, simErr)
		}
	case <-sim.done:
		t.Fatalf("brine cloud sim exited: %v\n%s", sim.err, simErr)
	case <-time.After(2 * time.Minute):
		t.Fatalf("brine cloud sim printed nothing\n%s", simErr)
	}
	if info.Boot != "testbed" || info.Cluster != cluster || info.Bridge == "" {
		t.Fatalf("sim says %+v", info)
	}

	dir := t.TempDir()
	mcfg := fmt.Sprintf("data_dir = %q\npublish_addr = \"%s:0\"\nrequest_addr = \"%s:0\"\nbootstrap_addr = \"%s:0\"\nheartbeat = \"1s\"\n",
		filepath.Join(dir, "master"), info.Bridge, info.Bridge, info.Bridge)
	files := map[string]string{
		"master.hcl": mcfg,
		"cloud.hcl": fmt.Sprintf(`provider "digitalocean" {
  api_url = %q
}
profile "app" {
  region  = "ams3"
  size    = "s-1vcpu-1gb"
  image   = "debian-12-x64"
  groups  = ["app"]
  bundles = ["app"]
}
`, info.URL),
		"app/main.hcl": `file "marker" {
  path    = "/etc/brine-converged"
  content = "converged ${minion.id} in ${join(",", minion.groups)}\n"
}
`,
	}
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	mst := startProc(t, io.Discard, "master", "-c", filepath.Join(dir, "master.hcl"))
	masterErr := mst.stderr
	sock := filepath.Join(dir, "master", "master.sock")
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		if _, _, code := brine(t, "key", "list", "--socket", sock); code == 0 {
			break
		}
		select {
		case <-mst.done:
			t.Fatalf("brine master exited: %v\n%s", mst.err, masterErr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("brine master did not come up\n%s", masterErr)
		}
	}

	t.Setenv(cloud.TokenEnv, info.Token)
	start := time.Now()
	out, stderr, code := brine(t, "cloud", "create", "app", "web-1", "-c", filepath.Join(dir, "cloud.hcl"), "--socket", sock,
		"--poll-interval", "100ms", "--converge-timeout", "3m")
	t.Logf("brine cloud create of a droplet booting as a systemd testbed host: %v", time.Since(start).Round(time.Millisecond))
	tc, aerr := testbed.Attach(cluster)
	if code != 0 {
		if aerr == nil && tc.Host("web-1") != nil {
			o, _, _ := tc.Host("web-1").Sh(context.Background(), "journalctl --no-pager -n 50 -u brine-minion; cat /var/log/brine-minion.log")
			t.Logf("web-1:\n%s", o)
		}
		t.Fatalf("brine cloud create: exit %d\n%s%s\nsim:\n%s\nmaster:\n%s", code, out, stderr, simErr, masterErr)
	}
	if !strings.Contains(out, "1 droplet(s) converged") {
		t.Fatalf("create said:\n%s", out)
	}
	if aerr != nil {
		t.Fatal(aerr)
	}
	h := tc.Host("web-1")
	if h == nil || !h.Systemd() {
		t.Fatalf("no systemd host web-1 in %s", cluster)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	got, _, err := h.Sh(ctx, "cat /etc/brine-converged; systemctl is-enabled brine-minion; systemctl is-active brine-minion; "+
		"pid=$(systemctl show -p MainPID --value brine-minion); readlink /proc/$pid/exe; cat /proc/$pid/cgroup")
	if err != nil || !strings.HasPrefix(got, "converged web-1 in app\nenabled\nactive\n/usr/bin/brine-minion\n") ||
		!strings.Contains(got, "/system.slice/brine-minion.service\n") {
		t.Fatalf("web-1 after create: %v\n%s", err, got)
	}

	// Ctrl-C on the simulator: it stops, and its hosts go with it.
	if err := sim.stop(time.Minute); err != nil {
		t.Fatalf("brine cloud sim: %v\n%s", err, simErr)
	}
	if left := testbed.Leftovers(cluster); len(left) > 0 {
		t.Fatalf("the simulator left %v after it stopped", left)
	}
}
