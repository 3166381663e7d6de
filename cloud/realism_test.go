package cloud_test

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/brinecm/brine/cloud"
	"github.com/brinecm/brine/cloud/dosim"
	"github.com/digitalocean/godo"
)

// These tests run brine's client against dosim with its realistic behaviours and faults on.

func appProfile(t *testing.T) *cloud.Profile { return mustConfig(t, testConfig).Profiles["app"] }

func createOK(t *testing.T, e *env, req cloud.CreateRequest) *cloud.CreateResult {
	t.Helper()
	if req.Master == nil {
		req.Master = e.master
	}
	res, err := e.c.Create(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// Destroy returns once the droplet 404s, so destroy then create of the same name converges and
// leaves one droplet of the name.
func TestDestroyThenCreateSameName(t *testing.T) {
	e := newEnv(t, dosim.Options{DeleteDelay: 50 * time.Millisecond}, nil)
	ctx := context.Background()
	first := createOK(t, e, cloud.CreateRequest{Profile: appProfile(t), Names: []string{"web-1"}})
	res, err := e.c.Destroy(ctx, cloud.DestroyRequest{Names: []string{"web-1"}})
	if err != nil || len(res.Destroyed) != 1 {
		t.Fatalf("destroy: %+v %v", res, err)
	}
	if left := e.sim.Droplets(); len(left) != 0 {
		t.Fatalf("destroy returned while the droplet is still there: %+v", left)
	}
	second := createOK(t, e, cloud.CreateRequest{Profile: appProfile(t), Names: []string{"web-1"}})
	if second.Droplets[0].Stage != cloud.StageConverged || second.Droplets[0].ID == first.Droplets[0].ID {
		t.Fatalf("second create: %+v", second.Droplets[0])
	}
	if got := names(e.sim.Droplets()); !slices.Equal(got, []string{"web-1"}) {
		t.Fatalf("droplets: %v", got)
	}
}

// A create of a name whose droplet is being destroyed waits for it to go, then makes the new
// one; with the old droplet stuck it refuses, making nothing.
func TestCreateWaitsForDyingName(t *testing.T) {
	ctx := context.Background()
	deleteAll := func(e *env) {
		for _, d := range e.sim.Droplets() {
			if _, err := e.do.Droplets.Delete(ctx, d.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	e := newEnv(t, dosim.Options{DeleteDelay: 100 * time.Millisecond}, nil)
	createOK(t, e, cloud.CreateRequest{Profile: appProfile(t), Names: []string{"web-1"}})
	deleteAll(e)
	res := createOK(t, e, cloud.CreateRequest{Profile: appProfile(t), Names: []string{"web-1"}})
	if res.Droplets[0].Stage != cloud.StageConverged || len(e.sim.Droplets()) != 1 {
		t.Fatalf("create after delete: %+v, %d droplets", res.Droplets[0], len(e.sim.Droplets()))
	}

	stuck := newEnv(t, dosim.Options{DeleteDelay: time.Hour}, nil)
	createOK(t, stuck, cloud.CreateRequest{Profile: appProfile(t), Names: []string{"web-2"}})
	deleteAll(stuck)
	_, err := stuck.c.Create(ctx, cloud.CreateRequest{Profile: appProfile(t), Names: []string{"web-2"}, Master: stuck.master,
		DeleteWait: 20 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "being destroyed") {
		t.Fatalf("create of a name stuck deleting: %v", err)
	}
	if got := names(stuck.sim.Droplets()); !slices.Equal(got, []string{"web-2"}) {
		t.Fatalf("droplets: %v", got)
	}
}

// A droplet that DigitalOcean never removes, and a locked one, are reported, not counted as
// destroyed; a locked droplet is never sent a delete. A droplet still "new" (which ignores a
// delete) is asked again until it goes.
func TestDestroyReportsDropletsThatStay(t *testing.T) {
	e := newEnv(t, dosim.Options{DeleteDelay: 20 * time.Millisecond, BootDelay: 30 * time.Millisecond,
		NeverDeleted: func(n string) bool { return n == "sticky" },
		Locked:       func(n string) bool { return n == "locked" }}, nil)
	ctx := context.Background()
	for _, n := range []string{"sticky", "locked"} {
		d, _, err := e.do.Droplets.Create(ctx, &godo.DropletCreateRequest{Name: n, Region: "ams3", Size: "s-1vcpu-1gb",
			Image: godo.DropletCreateImage{Slug: "debian-12-x64"}, Tags: []string{"brine"}})
		if err != nil {
			t.Fatal(err)
		}
		_ = d
	}
	res, err := e.c.Destroy(ctx, cloud.DestroyRequest{Names: []string{"sticky", "locked"}, Timeout: 2 * time.Second})
	if err == nil || len(res.Destroyed) != 0 {
		t.Fatalf("destroy: %+v %v", res, err)
	}
	if !strings.Contains(res.Failed["sticky"], "destroy action errored") {
		t.Fatalf("sticky: %q", res.Failed["sticky"])
	}
	if !strings.Contains(res.Failed["locked"], "locked") || !strings.Contains(res.Failed["locked"], "not deleted") {
		t.Fatalf("locked: %q", res.Failed["locked"])
	}
	for _, d := range e.sim.Droplets() {
		if d.Name == "locked" && e.sim.Requests("DELETE", "/v2/droplets/"+itoa(d.ID)) != 0 {
			t.Fatal("a locked droplet was sent a delete")
		}
	}
	if len(e.sim.Droplets()) != 2 {
		t.Fatalf("droplets: %v", names(e.sim.Droplets()))
	}

	// A droplet destroyed while still "new" (for a second: long enough for brine's first delete
	// to reach it while it is).
	young := newEnv(t, dosim.Options{DeleteDelay: 20 * time.Millisecond, BootDelay: time.Second}, nil)
	e = young
	d, _, err := e.do.Droplets.Create(ctx, &godo.DropletCreateRequest{Name: "young", Region: "ams3", Size: "s-1vcpu-1gb",
		Image: godo.DropletCreateImage{Slug: "debian-12-x64"}, Tags: []string{"brine"}})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := e.c.Destroy(ctx, cloud.DestroyRequest{Names: []string{"young"}}); err != nil || len(res.Destroyed) != 1 {
		t.Fatalf("destroy of a new droplet: %+v %v", res, err)
	}
	if _, _, err := e.do.Droplets.Get(ctx, d.ID); err == nil {
		t.Fatal("the new droplet is still there")
	}
	if n := e.sim.Requests("DELETE", "/v2/droplets/"+itoa(d.ID)); n < 2 {
		t.Fatalf("%d deletes for a droplet that ignored the first", n)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// Sync does not keep a droplet that is being destroyed: it plans it as dying and makes its name
// again once it is gone; while it is stuck, sync says so and makes no second droplet.
func TestSyncWithDropletStuckDeleting(t *testing.T) {
	cfg := mustConfig(t, testConfig)
	ctx := context.Background()
	e := newEnv(t, dosim.Options{DeleteDelay: time.Hour}, nil)
	if _, err := e.c.Sync(ctx, cloud.SyncRequest{Config: cfg, Map: "production", Master: e.master}); err != nil {
		t.Fatal(err)
	}
	var web1 dosim.Droplet
	for _, d := range e.sim.Droplets() {
		if d.Name == "web-1" {
			web1 = d
		}
	}
	if _, err := e.do.Droplets.Delete(ctx, web1.ID); err != nil {
		t.Fatal(err)
	}
	plan, err := e.c.Sync(ctx, cloud.SyncRequest{Config: cfg, Map: "production", DryRun: true})
	if err != nil || len(plan.Plan.Keep) != 5 || len(plan.Plan.Dying) != 1 || plan.Plan.Dying[0].ID != web1.ID ||
		len(plan.Plan.Create) != 1 || plan.Plan.Create[0].Name != "web-1" {
		t.Fatalf("plan with a dying droplet: %+v %v", plan.Plan, err)
	}
	_, err = e.c.Sync(ctx, cloud.SyncRequest{Config: cfg, Map: "production", Master: e.master,
		Create: cloud.CreateRequest{DeleteWait: 30 * time.Millisecond}})
	if err == nil || !strings.Contains(err.Error(), "being destroyed") {
		t.Fatalf("sync with web-1 stuck deleting: %v", err)
	}
	if n := len(e.sim.Droplets()); n != 6 {
		t.Fatalf("%d droplets", n)
	}

	// The same, with a delete that completes: sync waits and makes web-1 again.
	e2 := newEnv(t, dosim.Options{DeleteDelay: 100 * time.Millisecond}, nil)
	if _, err := e2.c.Sync(ctx, cloud.SyncRequest{Config: cfg, Map: "production", Master: e2.master}); err != nil {
		t.Fatal(err)
	}
	for _, d := range e2.sim.Droplets() {
		if d.Name == "web-1" {
			web1 = d
			if _, err := e2.do.Droplets.Delete(ctx, d.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	res, err := e2.c.Sync(ctx, cloud.SyncRequest{Config: cfg, Map: "production", Master: e2.master})
	if err != nil || len(res.Plan.Dying) != 1 {
		t.Fatalf("sync after a delete: %+v %v", res, err)
	}
	var again []dosim.Droplet
	for _, d := range e2.sim.Droplets() {
		if d.Name == "web-1" {
			again = append(again, d)
		}
	}
	if len(again) != 1 || again[0].ID == web1.ID {
		t.Fatalf("web-1 after sync: %+v", again)
	}
}

// A create whose action errors after its 202 fails at once, as not created, instead of waiting
// out the active timeout.
func TestCreateActionErrored(t *testing.T) {
	e := newEnv(t, dosim.Options{CreateErrors: func(n string) bool { return n == "web-2" }, ListDelay: 20 * time.Millisecond}, nil)
	res, err := e.c.Create(context.Background(), cloud.CreateRequest{Profile: appProfile(t), Names: []string{"web-1", "web-2"},
		Master: e.master, ActiveTimeout: 10 * time.Minute})
	if err == nil || !strings.Contains(err.Error(), "created 1 of 2 droplets, 1 converged") {
		t.Fatalf("create: %v", err)
	}
	d := res.Droplets[1]
	if d.Created || !strings.Contains(d.Error, "create action") || !strings.Contains(d.Error, "errored") {
		t.Fatalf("web-2: %+v", d)
	}
}

// A 5xx to a create that made its droplet, listed late and tagged later: brine finds it,
// adopts it, and makes exactly one. A droplet of the name that never gets brine's tag is
// reported and neither adopted nor duplicated.
func TestCreate5xxAfterDropletMade(t *testing.T) {
	e := newEnv(t, dosim.Options{ListDelay: 50 * time.Millisecond, TagDelay: 150 * time.Millisecond}, nil)
	e.sim.Inject(dosim.Fault{Method: "POST", Path: "/v2/droplets", Status: 500, Committed: true})
	res := createOK(t, e, cloud.CreateRequest{Profile: appProfile(t), Names: []string{"web-1"}, AdoptWait: 10 * time.Second})
	if got := names(e.sim.Droplets()); !slices.Equal(got, []string{"web-1"}) || res.Droplets[0].Stage != cloud.StageConverged {
		t.Fatalf("after a 500 that made the droplet: %v %+v", got, res.Droplets[0])
	}
	if n := e.sim.Requests("POST", "/v2/droplets"); n != 1 {
		t.Fatalf("%d creates sent", n)
	}

	e2 := newEnv(t, dosim.Options{TagDelay: time.Hour}, nil)
	e2.sim.Inject(dosim.Fault{Method: "POST", Path: "/v2/droplets", Status: 503, Committed: true})
	_, err := e2.c.Create(context.Background(), cloud.CreateRequest{Profile: appProfile(t), Names: []string{"web-1"},
		Master: e2.master, AdoptWait: 50 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "without the \"brine\" tag") {
		t.Fatalf("untagged droplet after a 503: %v", err)
	}
	if n := len(e2.sim.Droplets()); n != 1 || e2.sim.Requests("POST", "/v2/droplets") != 1 {
		t.Fatalf("%d droplets, %d creates", n, e2.sim.Requests("POST", "/v2/droplets"))
	}
}

// countingMaster counts the enrolment tokens it issues.
type countingMaster struct {
	*fakeMaster
	tokens int
}

func (m *countingMaster) CreateToken(ctx context.Context, id string, groups []string, ttl time.Duration) (string, error) {
	m.tokens++
	return m.fakeMaster.CreateToken(ctx, id, groups, ttl)
}

// A profile is checked against the live catalog before any token is minted: a size the region
// does not offer, an unknown region, an image not in the region. A region prefix, an omitted
// region, a custom image's integer id and a GPU size work, and GPU droplets are found.
func TestProfileCheckedAgainstCatalog(t *testing.T) {
	e := newEnv(t, dosim.Options{}, nil)
	ctx := context.Background()
	m := &countingMaster{fakeMaster: e.master}
	bad := []struct {
		region, size, image, want string
	}{
		{"ams3", "s-1vcpu-512mb-10gb", "debian-12-x64", `size "s-1vcpu-512mb-10gb" is not offered in ams3`},
		{"mars1", "s-1vcpu-1gb", "debian-12-x64", `region "mars1" is not a DigitalOcean region`},
		{"nyc2", "s-1vcpu-1gb", "debian-12-x64", `region "nyc2" takes no new droplets`},
		{"fra1", "s-1vcpu-1gb", itoa(dosim.CustomImageID), "is not available"},
		{"ams3", "s-1vcpu-1gb", "debian-13-x64", `image "debian-13-x64" does not exist`},
		{"ams3", "s-64vcpu-1tb", "debian-12-x64", `size "s-64vcpu-1tb" is not offered`},
	}
	for _, b := range bad {
		p := &cloud.Profile{Name: "p", Region: b.region, Size: b.size, Image: b.image}
		for _, dry := range []bool{true, false} {
			_, err := e.c.Create(ctx, cloud.CreateRequest{Profile: p, Names: []string{"web-1"}, Master: m, DryRun: dry})
			if err == nil || !strings.Contains(err.Error(), b.want) {
				t.Fatalf("%+v (dry run %v): %v", b, dry, err)
			}
		}
	}
	if m.tokens != 0 || len(e.sim.Droplets()) != 0 {
		t.Fatalf("%d tokens minted, %d droplets made for profiles the API would refuse", m.tokens, len(e.sim.Droplets()))
	}
	good := []*cloud.Profile{
		{Name: "prefix", Region: "nyc", Size: "s-1vcpu-512mb-10gb", Image: "debian-12-x64"},
		{Name: "anywhere", Region: "", Size: "c-2", Image: "debian-12-x64"},
		{Name: "golden", Region: "ams3", Size: "s-1vcpu-1gb", Image: itoa(dosim.CustomImageID)},
		{Name: "gpu", Region: "tor1", Size: "gpu-h100x1-80gb", Image: "ubuntu-24-04-x64"},
	}
	for i, p := range good {
		res := createOK(t, e, cloud.CreateRequest{Profile: p, Names: []string{"ok-" + itoa(i+1)}, Master: m})
		if res.Droplets[0].Stage != cloud.StageConverged {
			t.Fatalf("%s: %+v", p.Name, res.Droplets[0])
		}
	}
	ds, err := e.c.List(ctx, cloud.ListOptions{})
	if err != nil || len(ds) != 4 || ds[3].Size != "gpu-h100x1-80gb" || ds[0].Region != "nyc1" {
		t.Fatalf("list: %+v %v", ds, err)
	}
	// The GPU droplet is found by name too: create refuses the name, destroy destroys it.
	if _, err := e.c.Create(ctx, cloud.CreateRequest{Profile: good[0], Names: []string{"ok-4"}, Master: m}); err == nil ||
		!strings.Contains(err.Error(), "names already in use") {
		t.Fatalf("create over a GPU droplet's name: %v", err)
	}
	if res, err := e.c.Destroy(ctx, cloud.DestroyRequest{Names: []string{"ok-4"}}); err != nil || len(res.Destroyed) != 1 {
		t.Fatalf("destroy the GPU droplet: %+v %v", res, err)
	}
	// A region prefix with an image that only some of its datacenters have: brine sends the
	// datacenter that has both (nyc3), rather than leave DigitalOcean to pick one without it.
	golden := &cloud.Profile{Name: "golden", Region: "nyc", Size: "s-1vcpu-1gb", Image: itoa(dosim.CustomImageID)}
	createOK(t, e, cloud.CreateRequest{Profile: golden, Names: []string{"gold-1"}, Master: m})
	for _, d := range e.sim.Droplets() {
		if d.Name == "gold-1" && d.Region.Slug != "nyc3" {
			t.Fatalf("gold-1 in %s", d.Region.Slug)
		}
	}
}

// An account whose tag is "Brine": brine's droplets carry it, and brine still knows them as its
// own (list, destroy, sync).
func TestManagedTagAnyCase(t *testing.T) {
	e := newEnv(t, dosim.Options{}, nil)
	e.sim.MakeTag("Brine")
	e.sim.MakeTag("BRINE-MAP:production")
	cfg := mustConfig(t, testConfig)
	ctx := context.Background()
	if _, err := e.c.Sync(ctx, cloud.SyncRequest{Config: cfg, Map: "production", Master: e.master}); err != nil {
		t.Fatal(err)
	}
	for _, d := range e.sim.Droplets() {
		if !slices.Contains(d.Tags, "Brine") {
			t.Fatalf("%s tags %v", d.Name, d.Tags)
		}
	}
	ds, err := e.c.List(ctx, cloud.ListOptions{})
	if err != nil || len(ds) != 6 || !ds[0].Managed || ds[5].Profile != "app" {
		t.Fatalf("list: %+v %v", ds, err)
	}
	plan, err := e.c.Sync(ctx, cloud.SyncRequest{Config: cfg, Map: "production", DryRun: true})
	if err != nil || len(plan.Plan.Keep) != 6 || len(plan.Plan.Create) != 0 {
		t.Fatalf("second sync: %+v %v", plan.Plan, err)
	}
	if res, err := e.c.Destroy(ctx, cloud.DestroyRequest{Names: []string{"web-1"}}); err != nil || len(res.Destroyed) != 1 {
		t.Fatalf("destroy: %+v %v", res, err)
	}
	// The map's extras are found by their map tag in any case.
	cfg2 := mustConfig(t, strings.Replace(testConfig, "count   = 5", "count   = 4", 1))
	plan, err = e.c.Sync(ctx, cloud.SyncRequest{Config: cfg2, Map: "production", DryRun: true})
	if err != nil || len(plan.Plan.Extra) != 1 || plan.Plan.Extra[0].Name != "web-5" {
		t.Fatalf("extras: %+v %v", plan.Plan, err)
	}
}

// A CNAME is sent with its trailing dot and compared without it: set, set again (unchanged,
// with or without the dot), change, and roll back to the previous value as reported.
func TestDNSCNAMERoundTrip(t *testing.T) {
	e := newEnv(t, dosim.Options{}, nil)
	ctx := context.Background()
	if _, _, err := e.do.Domains.Create(ctx, &godo.DomainCreateRequest{Name: "ghost.example"}); err != nil {
		t.Fatal(err)
	}
	set := func(value string) *cloud.DNSChange {
		t.Helper()
		ch, err := e.c.DNSSet(ctx, cloud.DNSSetRequest{Domain: "ghost.example", Name: "www", Type: "CNAME", Value: value})
		if err != nil {
			t.Fatalf("set %s: %v", value, err)
		}
		return ch
	}
	if ch := set("blue.lb.example.net"); ch.Action != "create" || ch.Record.Data != "blue.lb.example.net" {
		t.Fatalf("create: %+v", ch)
	}
	for _, v := range []string{"blue.lb.example.net", "blue.lb.example.net.", "Blue.LB.example.net"} {
		if ch := set(v); ch.Action != "unchanged" {
			t.Fatalf("again with %q: %+v", v, ch)
		}
	}
	ch := set("green.lb.example.net.")
	if ch.Action != "update" || ch.Previous.Data != "blue.lb.example.net" || ch.Record.Data != "green.lb.example.net" {
		t.Fatalf("update: %+v", ch)
	}
	if back := set(ch.Previous.Data); back.Action != "update" || back.Record.Data != "blue.lb.example.net" {
		t.Fatalf("rollback: %+v", back)
	}
	if _, err := e.c.DNSSet(ctx, cloud.DNSSetRequest{Domain: "ghost.example", Name: "www", Type: "CNAME", Value: "not a host"}); err == nil {
		t.Fatal("a CNAME to a non-host was accepted")
	}
}

// A 403 from a token without a scope names the scope brine's request needed; brine's table of
// scopes agrees with the simulator's, which follows the OpenAPI description.
func TestForbiddenNamesTheScope(t *testing.T) {
	e := newEnv(t, dosim.Options{Scopes: []string{"droplet:read", "actions:read", "regions:read", "sizes:read", "image:read"}}, nil)
	ctx := context.Background()
	if _, err := e.c.List(ctx, cloud.ListOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err := e.c.Create(ctx, cloud.CreateRequest{Profile: appProfile(t), Names: []string{"web-1"}, Master: e.master})
	if err == nil || !strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), "droplet:create") || !strings.Contains(err.Error(), "tag:create") {
		t.Fatalf("create without droplet:create: %v", err)
	}
	_, err = e.c.DNSList(ctx, "ghost.example")
	if err == nil || !strings.Contains(err.Error(), "domain:read") {
		t.Fatalf("dns without domain:read: %v", err)
	}
	for _, r := range []struct{ method, path string }{
		{"GET", "/v2/droplets"}, {"DELETE", "/v2/droplets/12"}, {"GET", "/v2/droplets/12"}, {"GET", "/v2/droplets/12/actions"},
		{"GET", "/v2/actions"}, {"GET", "/v2/actions/9"}, {"GET", "/v2/regions"}, {"GET", "/v2/sizes"}, {"GET", "/v2/images/debian-12-x64"},
		{"GET", "/v2/domains/ghost.example/records"}, {"POST", "/v2/domains/ghost.example/records"},
		{"PUT", "/v2/domains/ghost.example/records/4"}, {"DELETE", "/v2/domains/ghost.example/records/4"}, {"GET", "/v2/account"},
	} {
		if got, want := cloud.RequiredScopes(r.method, r.path), dosim.RouteScopes(r.method, r.path); !slices.Equal(got, want) || len(got) == 0 {
			t.Errorf("%s %s: brine says %v, dosim %v", r.method, r.path, got, want)
		}
	}
	// A create also needs tag:create (for its tags) and image:read (for its image).
	if got := cloud.RequiredScopes("POST", "/v2/droplets"); !slices.Equal(got, []string{"droplet:create", "tag:create", "image:read"}) {
		t.Errorf("create scopes %v", got)
	}
}

// Droplet names end with a letter or digit, as DigitalOcean requires.
func TestDropletNamesEndAlphanumeric(t *testing.T) {
	for n, ok := range map[string]bool{"web-1": true, "web-": false, "web.": false, "w": true, "web.example": true, "-web": false} {
		if cloud.ValidName(n) != ok {
			t.Errorf("ValidName(%q) = %v", n, !ok)
		}
	}
	_, diags := cloud.ParseConfig([]byte(strings.Replace(testConfig, `names   = ["db-main"]`, `names   = ["db-"]`, 1)), "cloud.hcl")
	if !diags.HasErrors() || !strings.Contains(diags.Error(), "cloud.hcl:") || !strings.Contains(diags.Error(), `"db-"`) {
		t.Fatalf("diagnostics: %v", diags)
	}
}

// A create that made its droplet but whose answer never came (the client's response timeout):
// brine handles it as a 5xx, finds the droplet and adopts it; one droplet, one create sent.
func TestCreateTimeoutAfterDropletMade(t *testing.T) {
	e := newEnv(t, dosim.Options{ListDelay: 50 * time.Millisecond}, func(o *cloud.ClientOptions) { o.ResponseTimeout = 200 * time.Millisecond })
	e.sim.Inject(dosim.Fault{Method: "POST", Path: "/v2/droplets", Committed: true, Hang: true})
	res := createOK(t, e, cloud.CreateRequest{Profile: appProfile(t), Names: []string{"web-1"}, AdoptWait: 10 * time.Second})
	if got := names(e.sim.Droplets()); !slices.Equal(got, []string{"web-1"}) || res.Droplets[0].Stage != cloud.StageConverged {
		t.Fatalf("after a create that timed out: %v %+v", got, res.Droplets[0])
	}
	if n := e.sim.Requests("POST", "/v2/droplets"); n != 1 {
		t.Fatalf("%d creates sent", n)
	}
}
