package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/digitalocean/godo"

	"github.com/brinecm/brine/cloud"
	"github.com/brinecm/brine/cloud/dosim"
	"github.com/brinecm/brine/master"
	"github.com/brinecm/brine/minion"
)

// tokenRE finds an enrolment token in a droplet's user_data.
var tokenRE = regexp.MustCompile(`(?m)^token\s*=\s*"(brn1-[a-z0-9]+)"`)

// cloudEnv is a DigitalOcean simulator and a cloud.hcl pointing at it, with a bundle "app" that
// writes out/<minion id>.
type cloudEnv struct {
	sim    *dosim.Server
	config string // path of cloud.hcl
	out    string // where the app bundle writes
}

func newCloudEnv(t *testing.T, opts dosim.Options, bundleHCL string) *cloudEnv {
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
  requests_per_minute = 250
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
	env := newCloudEnv(t, dosim.Options{}, "")
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
	env := newCloudEnv(t, dosim.Options{}, "")
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
}

// destroy refuses droplets without the brine tag, and without --yes off a terminal.
func TestCloudDestroyRefusesUntagged(t *testing.T) {
	env := newCloudEnv(t, dosim.Options{}, "")
	c, err := cloud.NewClient(cloud.ClientOptions{Token: cloud.NewToken(env.sim.Token()), APIURL: env.sim.URL(), RequestsPerMinute: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, _, err := c.Godo().Droplets.Create(ctx, &godo.DropletCreateRequest{Name: "handmade", Region: "ams3",
		Size: "s-1vcpu-1gb", Image: godo.DropletCreateImage{Slug: "ubuntu-24-04-x64"}}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Godo().Droplets.Create(ctx, &godo.DropletCreateRequest{Name: "ours", Region: "ams3",
		Size: "s-1vcpu-1gb", Image: godo.DropletCreateImage{Slug: "ubuntu-24-04-x64"}, Tags: []string{cloud.ManagedTag}}); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := brine(t, "cloud", "destroy", "handmade", "--yes", "-c", env.config)
	if code != 1 || !strings.Contains(stderr, "brine") {
		t.Fatalf("untagged: exit %d\n%s", code, stderr)
	}
	out, stderr, code := brine(t, "cloud", "destroy", "ours", "-c", env.config)
	if code != 1 || !strings.Contains(stderr, "--yes") {
		t.Fatalf("no --yes off a terminal: exit %d\n%s%s", code, out, stderr)
	}
	if n := len(env.sim.Droplets()); n != 2 {
		t.Fatalf("%d droplets left, want 2", n)
	}
	out, stderr, code = brine(t, "cloud", "destroy", "ours", "--yes", "--json", "-c", env.config)
	if code != 0 || !strings.Contains(out, `"ours"`) {
		t.Fatalf("tagged: exit %d\n%s%s", code, out, stderr)
	}
	ds := env.sim.Droplets()
	if len(ds) != 1 || ds[0].Name != "handmade" {
		t.Fatalf("left: %+v", ds)
	}
}
