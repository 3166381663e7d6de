package cloud_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/brinecm/brine/cloud"
	"github.com/brinecm/brine/cloud/dosim"
	"github.com/digitalocean/godo"
)

// fakeMaster is a boundary fake of the master: it issues single-use tokens and "enrols" a
// minion when the droplet's user_data (read back from the simulator) carries a token it issued
// and that was not used before.
type fakeMaster struct {
	sim *dosim.Server

	mu        sync.Mutex
	issued    map[string]bool // token -> used
	enrolled  []string
	converged map[string][]string
	failEnrol map[string]bool
	block     bool // WaitEnrolled blocks until ctx ends
}

func newFakeMaster(sim *dosim.Server) *fakeMaster {
	return &fakeMaster{sim: sim, issued: map[string]bool{}, converged: map[string][]string{}, failEnrol: map[string]bool{}}
}

func (m *fakeMaster) CreateToken(_ context.Context, id string, groups []string, ttl time.Duration) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	tok := fmt.Sprintf("enrol-%d-%s-%s", len(m.issued)+1, id, strings.Join(groups, "."))
	m.issued[tok] = false
	return tok, nil
}

func (m *fakeMaster) Bootstrap(context.Context) (cloud.BootstrapInfo, error) {
	return cloud.BootstrapInfo{BinaryURL: "http://10.213.0.1:4507/bootstrap/brine-linux-amd64",
		SHA256:     strings.Repeat("ab", 32),
		MasterAddr: "10.213.0.1:4505", MasterFingerprint: "SHA256:masterkeyfingerprint"}, nil
}

func (m *fakeMaster) WaitEnrolled(ctx context.Context, id string) error {
	if m.block {
		<-ctx.Done()
		return ctx.Err()
	}
	ud, ok := m.sim.UserData(id)
	if !ok {
		return errors.New("no such droplet")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failEnrol[id] {
		return errors.New("enrolment refused")
	}
	for tok, used := range m.issued {
		if strings.Contains(ud, `token         = "`+tok+`"`) {
			if used {
				return errors.New("token reuse refused")
			}
			m.issued[tok] = true
			m.enrolled = append(m.enrolled, id)
			return nil
		}
	}
	return errors.New("no valid token in user_data")
}

func (m *fakeMaster) Converge(_ context.Context, id string, bundles []string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.converged[id] = bundles
	return nil
}

type env struct {
	sim    *dosim.Server
	url    string
	c      *cloud.Client
	do     *godo.Client
	master *fakeMaster
	logs   *bytes.Buffer
}

type syncBuffer struct {
	mu sync.Mutex
	bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Buffer.Write(p)
}

// newEnv starts a simulator whose droplets the fake master "boots" (ExternalBoot: it reads their
// user_data back), and a client for it.
func newEnv(t testing.TB, so dosim.Options, mod func(*cloud.ClientOptions)) *env {
	t.Helper()
	so.ExternalBoot = true
	if so.PerMinute == 0 {
		// The test client polls every 2ms, not every 3s: DigitalOcean's per-minute limit would
		// stall it for a minute. TestHonours429RetryAfter covers the limit's 429s.
		so.PerMinute = -1
	}
	sim := dosim.New(so)
	hs := httptest.NewServer(sim)
	t.Cleanup(func() { hs.Close(); sim.Close() })
	logs := &syncBuffer{}
	opts := cloud.ClientOptions{Token: cloud.NewToken(sim.Token()), APIURL: hs.URL + "/", RequestsPerMinute: -1,
		PollInterval: 2 * time.Millisecond, BackoffBase: time.Millisecond, BackoffMax: 5 * time.Millisecond,
		Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	if mod != nil {
		mod(&opts)
	}
	c, err := cloud.NewClient(opts)
	if err != nil {
		t.Fatal(err)
	}
	return &env{sim: sim, url: hs.URL + "/", c: c, do: c.Godo(), master: newFakeMaster(sim), logs: &logs.Buffer}
}

const testConfig = `
provider "digitalocean" {
  token_file = "/nonexistent"
}

profile "app" {
  region     = "ams3"
  size       = "s-1vcpu-1gb"
  image      = "ubuntu-24-04-x64"
  tags       = ["ghost"]
  ipv6       = true
  monitoring = true
  groups     = ["app", "web"]
  bundles    = ["app"]
}

profile "db" {
  region = "ams3"
  size   = "s-2vcpu-4gb"
  image  = "debian-12-x64"
  groups = ["db"]
}

map "production" {
  droplet "web" {
    profile = "app"
    count   = 5
  }
  droplet "db" {
    profile = "db"
    names   = ["db-main"]
  }
}
`

func mustConfig(t testing.TB, src string) *cloud.Config {
	t.Helper()
	cfg, diags := cloud.ParseConfig([]byte(src), "cloud.hcl")
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	return cfg
}

func names(ds []dosim.Droplet) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.Name)
	}
	sort.Strings(out)
	return out
}

func TestCreateConverges(t *testing.T) {
	e := newEnv(t, dosim.Options{BootDelay: 5 * time.Millisecond}, nil)
	cfg := mustConfig(t, testConfig)
	var mu sync.Mutex
	stages := map[string][]cloud.Stage{}
	res, err := e.c.Create(context.Background(), cloud.CreateRequest{
		Profile: cfg.Profiles["app"], Names: []string{"web-1", "web-2", "web-3", "web-4", "web-5"}, Master: e.master,
		OnEvent: func(ev cloud.Event) {
			mu.Lock()
			defer mu.Unlock()
			stages[ev.Droplet] = append(stages[ev.Droplet], ev.Stage)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if created, converged := res.Counts(); created != 5 || converged != 5 {
		t.Fatalf("counts %d %d", created, converged)
	}
	want := []cloud.Stage{cloud.StageCreating, cloud.StageActive, cloud.StageEnrolled, cloud.StageConverged}
	for _, n := range []string{"web-1", "web-5"} {
		if !slices.Equal(stages[n], want) {
			t.Fatalf("%s stages %v", n, stages[n])
		}
	}
	for _, d := range res.Droplets {
		if d.PublicIP == "" || d.ID == 0 || len(d.UserDataSHA256) != 64 {
			t.Fatalf("result %+v", d)
		}
	}
	for _, d := range e.sim.Droplets() {
		for _, tag := range []string{"brine", "brine-profile:app", "ghost"} {
			if !slices.Contains(d.Tags, tag) {
				t.Fatalf("%s lacks tag %s: %v", d.Name, tag, d.Tags)
			}
		}
		if d.Status != "active" || !slices.Contains(d.Features, "ipv6") {
			t.Fatalf("droplet %+v", d)
		}
	}
	if len(e.master.enrolled) != 5 || !slices.Equal(e.master.converged["web-3"], []string{"app"}) {
		t.Fatalf("master saw %v %v", e.master.enrolled, e.master.converged)
	}
	// Each droplet got its own token: replaying one droplet's enrolment is refused.
	if err := e.master.WaitEnrolled(context.Background(), "web-1"); err == nil || !strings.Contains(err.Error(), "reuse") {
		t.Fatalf("token reuse: %v", err)
	}
}

// A simulator whose droplets never boot says so (dosim's SimulatorHeader); create then refuses
// at once, having made nothing, instead of waiting the converge timeout for an enrolment that
// cannot come. Plans (dry runs) still work, and so does a simulator that boots its droplets.
func TestCreateRefusesNeverBootingSimulator(t *testing.T) {
	sim := dosim.New(dosim.Options{})
	hs := httptest.NewServer(sim)
	t.Cleanup(func() { hs.Close(); sim.Close() })
	c, err := cloud.NewClient(cloud.ClientOptions{Token: cloud.NewToken(sim.Token()), APIURL: hs.URL + "/", RequestsPerMinute: -1})
	if err != nil {
		t.Fatal(err)
	}
	prof := mustConfig(t, testConfig).Profiles["app"]
	m := newFakeMaster(sim)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := c.Create(ctx, cloud.CreateRequest{Profile: prof, Names: []string{"web-1"}, Master: m, ConvergeTimeout: 30 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "never boot") || !strings.Contains(err.Error(), "--boot testbed") {
		t.Fatalf("create against a never-booting simulator: %v", err)
	}
	if n := len(sim.Droplets()); n != 0 || res.Droplets[0].Created {
		t.Fatalf("%d droplets made, result %+v", n, res.Droplets)
	}
	if len(m.issued) != 0 {
		t.Fatal("an enrolment token was issued for a droplet that was never made")
	}
	if _, err := c.Create(ctx, cloud.CreateRequest{Profile: prof, Names: []string{"web-1"}, DryRun: true}); err != nil {
		t.Fatalf("dry run: %v", err)
	}
	// The same client against a simulator that boots (here: its droplets are played by the fake master).
	e := newEnv(t, dosim.Options{}, nil)
	if _, err := e.c.Create(ctx, cloud.CreateRequest{Profile: prof, Names: []string{"web-1"}, Master: e.master}); err != nil {
		t.Fatal(err)
	}
}

func TestCreateRefusesTakenNames(t *testing.T) {
	e := newEnv(t, dosim.Options{}, nil)
	cfg := mustConfig(t, testConfig)
	ctx := context.Background()
	if _, _, err := e.do.Droplets.Create(ctx, &godo.DropletCreateRequest{Name: "web-2", Region: "ams3", Size: "s-1vcpu-1gb",
		Image: godo.DropletCreateImage{Slug: "debian-12-x64"}}); err != nil {
		t.Fatal(err)
	}
	_, err := e.c.Create(ctx, cloud.CreateRequest{Profile: cfg.Profiles["app"], Names: []string{"web-1", "web-2"}, Master: e.master})
	if err == nil || !strings.Contains(err.Error(), "web-2 (id") {
		t.Fatalf("want a name-in-use error, got %v", err)
	}
	if got := names(e.sim.Droplets()); !slices.Equal(got, []string{"web-2"}) {
		t.Fatalf("droplets after refusal: %v", got)
	}
	for _, bad := range [][]string{{"Web_1"}, {"a", "a"}, {"x..y"}} {
		if _, err := e.c.Create(ctx, cloud.CreateRequest{Profile: cfg.Profiles["app"], Names: bad, Master: e.master}); err == nil {
			t.Fatalf("names %v accepted", bad)
		}
	}
	// A dry run checks but makes nothing.
	res, err := e.c.Create(ctx, cloud.CreateRequest{Profile: cfg.Profiles["app"], Names: []string{"web-9"}, DryRun: true})
	if err != nil || !res.DryRun || e.sim.Requests("POST", "/v2/droplets") != 1 {
		t.Fatalf("dry run: %v, %d creates", err, e.sim.Requests("POST", "/v2/droplets"))
	}
}

func TestPartialFailureThenSyncResumes(t *testing.T) {
	e := newEnv(t, dosim.Options{DropletLimit: 3}, nil)
	cfg := mustConfig(t, testConfig)
	ctx := context.Background()
	res, err := e.c.Sync(ctx, cloud.SyncRequest{Config: cfg, Map: "production", Master: e.master})
	if err == nil || !strings.Contains(err.Error(), "created 3 of 5 droplets") || !strings.Contains(err.Error(), "droplet limit") {
		t.Fatalf("want 3 of 5, got %v", err)
	}
	if len(res.Plan.Create) != 6 {
		t.Fatalf("plan %+v", res.Plan)
	}
	if got := len(e.sim.Droplets()); got != 3 {
		t.Fatalf("%d droplets after partial failure", got)
	}
	made := names(e.sim.Droplets())

	e.sim.SetDropletLimit(25)
	res, err = e.c.Sync(ctx, cloud.SyncRequest{Config: cfg, Map: "production", Master: e.master})
	if err != nil {
		t.Fatal(err)
	}
	var again []string
	for _, w := range res.Plan.Create {
		again = append(again, w.Name)
		if slices.Contains(made, w.Name) {
			t.Fatalf("sync re-created %s", w.Name)
		}
	}
	if len(again) != 3 || len(res.Plan.Keep) != 3 {
		t.Fatalf("resume plan: create %v keep %d", again, len(res.Plan.Keep))
	}
	all := names(e.sim.Droplets())
	if !slices.Equal(all, []string{"db-main", "web-1", "web-2", "web-3", "web-4", "web-5"}) {
		t.Fatalf("after resume: %v", all)
	}
	res, err = e.c.Sync(ctx, cloud.SyncRequest{Config: cfg, Map: "production", Master: e.master})
	if err != nil || len(res.Plan.Create) != 0 || len(res.Plan.Keep) != 6 {
		t.Fatalf("third sync: %v %+v", err, res.Plan)
	}
}

func TestSyncPrune(t *testing.T) {
	e := newEnv(t, dosim.Options{}, nil)
	ctx := context.Background()
	cfg := mustConfig(t, testConfig)
	if _, err := e.c.Sync(ctx, cloud.SyncRequest{Config: cfg, Map: "production", Master: e.master}); err != nil {
		t.Fatal(err)
	}
	smaller := mustConfig(t, strings.Replace(testConfig, "count   = 5", "count   = 2", 1))
	res, err := e.c.Sync(ctx, cloud.SyncRequest{Config: smaller, Map: "production", Master: e.master})
	if err != nil || len(res.Plan.Extra) != 3 || res.Destroyed != nil || len(e.sim.Droplets()) != 6 {
		t.Fatalf("sync without prune: %v %+v", err, res.Plan)
	}
	res, err = e.c.Sync(ctx, cloud.SyncRequest{Config: smaller, Map: "production", Prune: true, DryRun: true, Master: e.master})
	if err != nil || len(res.Plan.Extra) != 3 || len(e.sim.Droplets()) != 6 {
		t.Fatalf("dry-run prune: %v", err)
	}
	res, err = e.c.Sync(ctx, cloud.SyncRequest{Config: smaller, Map: "production", Prune: true, Master: e.master})
	if err != nil || len(res.Destroyed.Destroyed) != 3 {
		t.Fatalf("prune: %v %+v", err, res.Destroyed)
	}
	if got := names(e.sim.Droplets()); !slices.Equal(got, []string{"db-main", "web-1", "web-2"}) {
		t.Fatalf("after prune: %v", got)
	}
}

func TestDestroyRefusesUntagged(t *testing.T) {
	e := newEnv(t, dosim.Options{}, nil)
	cfg := mustConfig(t, testConfig)
	ctx := context.Background()
	if _, err := e.c.Create(ctx, cloud.CreateRequest{Profile: cfg.Profiles["db"], Names: []string{"db-1"}, Master: e.master}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.do.Droplets.Create(ctx, &godo.DropletCreateRequest{Name: "precious", Region: "ams3", Size: "s-1vcpu-1gb",
		Image: godo.DropletCreateImage{Slug: "debian-12-x64"}, Tags: []string{"prod"}}); err != nil {
		t.Fatal(err)
	}
	_, err := e.c.Destroy(ctx, cloud.DestroyRequest{Names: []string{"db-1", "precious"}})
	if err == nil || !strings.Contains(err.Error(), `precious (id`) || !strings.Contains(err.Error(), "lacks the \"brine\" tag") {
		t.Fatalf("want refusal, got %v", err)
	}
	if n := len(e.sim.Droplets()); n != 2 || e.sim.Requests("DELETE", "/v2/droplets") != 0 {
		t.Fatalf("refusal deleted something: %d left", n)
	}
	if _, err := e.c.Destroy(ctx, cloud.DestroyRequest{Names: []string{"nope"}}); err == nil {
		t.Fatal("destroying a missing droplet succeeded")
	}
	res, err := e.c.Destroy(ctx, cloud.DestroyRequest{Names: []string{"db-1"}, DryRun: true})
	if err != nil || len(res.Destroyed) != 1 || len(e.sim.Droplets()) != 2 {
		t.Fatalf("dry run: %v", err)
	}
	res, err = e.c.Destroy(ctx, cloud.DestroyRequest{Names: []string{"db-1"}})
	if err != nil || len(res.Destroyed) != 1 {
		t.Fatal(err)
	}
	if got := names(e.sim.Droplets()); !slices.Equal(got, []string{"precious"}) {
		t.Fatalf("left: %v", got)
	}
}

func TestHonours429RetryAfter(t *testing.T) {
	e := newEnv(t, dosim.Options{}, nil)
	e.sim.Inject(dosim.Fault{Method: "GET", Path: "/v2/droplets", Status: 429, RetryAfter: time.Second})
	start := time.Now()
	if _, err := e.c.List(context.Background(), cloud.ListOptions{}); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < time.Second {
		t.Fatalf("retried after %v, before Retry-After", took)
	}
	// The 429'd list of non-GPU droplets, its retry, and the list of GPU droplets.
	if n := e.sim.Requests("GET", "/v2/droplets"); n != 3 {
		t.Fatalf("%d requests", n)
	}
}

func TestRetries5xx(t *testing.T) {
	e := newEnv(t, dosim.Options{}, nil)
	cfg := mustConfig(t, testConfig)
	ctx := context.Background()
	e.sim.Inject(dosim.Fault{Method: "GET", Status: 503, Times: 3})
	if _, err := e.c.List(ctx, cloud.ListOptions{}); err != nil {
		t.Fatalf("after three 503s: %v", err)
	}
	// A 500 on create: brine looks the name up before trying again, and makes one droplet.
	e.sim.Inject(dosim.Fault{Method: "POST", Path: "/v2/droplets", Status: 500})
	e.sim.Inject(dosim.Fault{Method: "GET", Path: "/v2/droplets", Status: 502})
	res, err := e.c.Create(ctx, cloud.CreateRequest{Profile: cfg.Profiles["db"], Names: []string{"db-1"}, Master: e.master,
		AdoptWait: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if got := names(e.sim.Droplets()); !slices.Equal(got, []string{"db-1"}) || res.Droplets[0].Stage != cloud.StageConverged {
		t.Fatalf("after a 500 on create: %v", got)
	}
	if n := e.sim.Requests("POST", "/v2/droplets"); n != 2 {
		t.Fatalf("%d create requests", n)
	}
	// A 4xx is final.
	e.sim.Inject(dosim.Fault{Method: "GET", Status: 500, Times: 100})
	if _, err := e.c.List(ctx, cloud.ListOptions{}); err == nil || !strings.Contains(err.Error(), "500") {
		t.Fatalf("endless 500s: %v", err)
	}
}

func TestStuckDropletTimesOut(t *testing.T) {
	e := newEnv(t, dosim.Options{Stuck: func(n string) bool { return n == "web-2" }}, nil)
	cfg := mustConfig(t, testConfig)
	res, err := e.c.Create(context.Background(), cloud.CreateRequest{Profile: cfg.Profiles["app"],
		Names: []string{"web-1", "web-2", "web-3"}, Master: e.master, ActiveTimeout: 150 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "droplet web-2 (id") || !strings.Contains(err.Error(), "still not active") {
		t.Fatalf("want a timeout naming web-2, got %v", err)
	}
	if !strings.Contains(err.Error(), "created 3 of 3 droplets, 2 converged") {
		t.Fatalf("counts: %v", err)
	}
	if res.Droplets[1].Stage != cloud.StageCreating || res.Droplets[0].Stage != cloud.StageConverged {
		t.Fatalf("stages %+v", res.Droplets)
	}
}

func TestCancelListsWhatExists(t *testing.T) {
	e := newEnv(t, dosim.Options{}, nil)
	e.master.block = true
	cfg := mustConfig(t, testConfig)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	active := 0
	res, err := e.c.Create(ctx, cloud.CreateRequest{Profile: cfg.Profiles["db"], Names: []string{"a-1", "a-2"}, Master: e.master,
		OnEvent: func(ev cloud.Event) {
			mu.Lock()
			defer mu.Unlock()
			if ev.Stage == cloud.StageActive {
				if active++; active == 2 {
					cancel()
				}
			}
		}})
	if err == nil || !strings.Contains(err.Error(), "created 2 of 2 droplets, 0 converged") {
		t.Fatalf("cancel: %v", err)
	}
	if len(res.Existing) != 2 || res.Existing[0].PublicIP == "" {
		t.Fatalf("existing after cancel: %+v", res.Existing)
	}
}

func TestDNS(t *testing.T) {
	e := newEnv(t, dosim.Options{}, nil)
	ctx := context.Background()
	if _, _, err := e.do.Domains.Create(ctx, &godo.DomainCreateRequest{Name: "ghost.example"}); err != nil {
		t.Fatal(err)
	}
	ch, err := e.c.DNSSet(ctx, cloud.DNSSetRequest{Domain: "ghost.example", Name: "www", Type: "A", Value: "198.18.0.1"})
	if err != nil || ch.Action != "create" || ch.Record.ID == 0 || ch.Record.TTL != 300 {
		t.Fatalf("create: %+v %v", ch, err)
	}
	ch, err = e.c.DNSSet(ctx, cloud.DNSSetRequest{Domain: "ghost.example", Name: "www", Type: "A", Value: "198.18.0.1"})
	if err != nil || ch.Action != "unchanged" {
		t.Fatalf("again: %+v %v", ch, err)
	}
	// A second record of the same name appears (someone else's round robin): set leaves one.
	if _, _, err := e.do.Domains.CreateRecord(ctx, "ghost.example", &godo.DomainRecordEditRequest{Type: "A", Name: "www", Data: "198.18.0.9"}); err != nil {
		t.Fatal(err)
	}
	ch, err = e.c.DNSSet(ctx, cloud.DNSSetRequest{Domain: "ghost.example", Name: "www.ghost.example", Type: "a", Value: "198.18.0.2", TTL: 60, DryRun: true})
	if err != nil || ch.Action != "update" || len(ch.Removed) != 1 {
		t.Fatalf("dry run: %+v %v", ch, err)
	}
	ch, err = e.c.DNSSet(ctx, cloud.DNSSetRequest{Domain: "ghost.example", Name: "www", Type: "A", Value: "198.18.0.2", TTL: 60})
	if err != nil || ch.Action != "update" || ch.Previous.Data != "198.18.0.1" || ch.Record.TTL != 60 {
		t.Fatalf("update: %+v %v", ch, err)
	}
	recs, err := e.c.DNSList(ctx, "ghost.example")
	if err != nil {
		t.Fatal(err)
	}
	var www []string
	for _, r := range recs {
		if r.Name == "www" {
			www = append(www, r.Data)
		}
	}
	if !slices.Equal(www, []string{"198.18.0.2"}) {
		t.Fatalf("www records: %v", www)
	}
	if _, err := e.c.DNSSet(ctx, cloud.DNSSetRequest{Domain: "ghost.example", Name: "www", Type: "A", Value: "::1"}); err == nil {
		t.Fatal("an IPv6 value for an A record was accepted")
	}
	if _, err := e.c.DNSList(ctx, "nope.example"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("missing domain: %v", err)
	}
}

func TestTokenNeverAppears(t *testing.T) {
	const secret = "dop_v1_0123456789abcdefSECRETSECRET0123456789abcdef0123456789abcd"
	e := newEnv(t, dosim.Options{Token: secret, BootDelay: time.Millisecond}, nil)
	cfg := mustConfig(t, testConfig)
	ctx := context.Background()
	var events bytes.Buffer
	e.sim.Inject(dosim.Fault{Method: "GET", Status: 503, Times: 2})
	res, err := e.c.Create(ctx, cloud.CreateRequest{Profile: cfg.Profiles["app"], Names: []string{"t-1"}, Master: e.master,
		OnEvent: func(ev cloud.Event) { _ = json.NewEncoder(&events).Encode(ev) }})
	if err != nil {
		t.Fatal(err)
	}
	// An API error path, and every way the token could be formatted.
	_, _ = e.c.DNSList(ctx, "missing.example")
	bad, _ := cloud.NewClient(cloud.ClientOptions{Token: cloud.NewToken(secret + "x"), APIURL: e.url, RequestsPerMinute: -1})
	_, listErr := bad.List(ctx, cloud.ListOptions{})
	tok := cloud.NewToken(secret)
	opts := cloud.ClientOptions{Token: tok}
	jsonOpts, _ := json.Marshal(opts)
	jsonRes, _ := json.Marshal(res)
	var out bytes.Buffer
	fmt.Fprintf(&out, "%v %+v %#v %s %q %v %s %s %v\n", tok, opts, opts, tok, tok, listErr, jsonOpts, jsonRes, res)
	slog.New(slog.NewTextHandler(&out, nil)).Info("x", "token", tok, "opts", opts)
	for what, b := range map[string]string{"logs": e.logs.String(), "events": events.String(), "output": out.String()} {
		if strings.Contains(b, secret) || strings.Contains(b, "SECRETSECRET") {
			t.Fatalf("the token appears in %s:\n%s", what, b)
		}
	}
	if !strings.Contains(e.logs.String(), "retrying") || !strings.Contains(out.String(), "[redacted]") || listErr == nil {
		t.Fatalf("the test did not exercise what it claims: logs %q", e.logs.String())
	}
}

func TestLoadToken(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "token")
	if err := os.WriteFile(f, []byte("  filetoken\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(cloud.TokenEnv, "")
	tok, err := cloud.LoadToken(f)
	if err != nil || tok.IsZero() {
		t.Fatalf("file token: %v", err)
	}
	if err := os.Chmod(f, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := cloud.LoadToken(f); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable token file: %v", err)
	}
	t.Setenv(cloud.TokenEnv, "envtoken")
	if tok, err := cloud.LoadToken(f); err != nil || tok.IsZero() {
		t.Fatalf("env token: %v", err)
	}
	t.Setenv(cloud.TokenEnv, "")
	if _, err := cloud.LoadToken(""); err == nil || !strings.Contains(err.Error(), cloud.TokenEnv) {
		t.Fatalf("no token: %v", err)
	}
}

func TestPacing(t *testing.T) {
	// At 120 a minute the bucket holds a burst of 25 and refills one every 0.5 s: 25
	// requests go at once, the 26th waits about half a second.
	e := newEnv(t, dosim.Options{}, func(o *cloud.ClientOptions) { o.RequestsPerMinute = 120 })
	ctx := context.Background()
	start := time.Now()
	for range 26 {
		if _, _, err := e.do.Regions.List(ctx, nil); err != nil {
			t.Fatal(err)
		}
	}
	if took := time.Since(start); took < 400*time.Millisecond || took > 3*time.Second {
		t.Fatalf("26 requests at 120/min took %v", took)
	}
}
