package dosim_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/brinecm/brine/cloud/dosim"
	"github.com/digitalocean/godo"
)

// bearer adds the token to each request, as godo's oauth2 client would.
type bearer struct{ token string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return http.DefaultTransport.RoundTrip(r)
}

func newSim(t *testing.T, opts dosim.Options) (*dosim.Server, *godo.Client, string) {
	t.Helper()
	sim := dosim.New(opts)
	hs := httptest.NewServer(sim)
	t.Cleanup(func() { hs.Close(); sim.Close() })
	c, err := godo.New(&http.Client{Transport: bearer{sim.Token()}}, godo.SetBaseURL(hs.URL+"/"))
	if err != nil {
		t.Fatal(err)
	}
	return sim, c, hs.URL
}

func createReq(name string, tags ...string) *godo.DropletCreateRequest {
	return &godo.DropletCreateRequest{Name: name, Region: "ams3", Size: "s-1vcpu-1gb",
		Image: godo.DropletCreateImage{Slug: "ubuntu-24-04-x64"}, Tags: tags, UserData: "#!/bin/sh\necho hi\n"}
}

func waitActive(t *testing.T, c *godo.Client, id int) *godo.Droplet {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		d, _, err := c.Droplets.Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if d.Status == "active" {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("droplet %d still %q", id, d.Status)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCreateGetActive(t *testing.T) {
	_, c, _ := newSim(t, dosim.Options{BootDelay: 30 * time.Millisecond})
	ctx := context.Background()
	d, resp, err := c.Droplets.Create(ctx, createReq("web-1", "brine"))
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusAccepted || d.Status != "new" || d.Name != "web-1" {
		t.Fatalf("create: status %d droplet %+v", resp.StatusCode, d)
	}
	if len(resp.Links.Actions) != 1 || resp.Links.Actions[0].Rel != "create" {
		t.Fatalf("create links: %+v", resp.Links)
	}
	if ip, _ := d.PublicIPv4(); ip != "" {
		t.Fatalf("a new droplet has an address: %s", ip)
	}
	if resp.Rate.Limit != 5000 || resp.Rate.Remaining != 4999 || resp.Rate.Reset.IsZero() {
		t.Fatalf("rate headers: %+v", resp.Rate)
	}
	a, _, err := c.Actions.Get(ctx, resp.Links.Actions[0].ID)
	if err != nil || a.Status != "in-progress" || a.Type != "create" || a.ResourceID != d.ID {
		t.Fatalf("create action: %+v %v", a, err)
	}
	got := waitActive(t, c, d.ID)
	pub, _ := got.PublicIPv4()
	priv, _ := got.PrivateIPv4()
	if pub == "" || priv == "" || got.Region.Slug != "ams3" || got.Size.Slug != "s-1vcpu-1gb" || got.Image.Slug != "ubuntu-24-04-x64" {
		t.Fatalf("active droplet: %+v", got)
	}
	a, _, err = c.Actions.Get(ctx, resp.Links.Actions[0].ID)
	if err != nil || a.Status != "completed" || a.CompletedAt == nil {
		t.Fatalf("create action after boot: %+v %v", a, err)
	}
}

func TestCreateMultipleListPaginateFilter(t *testing.T) {
	// Deletes take effect at once here; TestDeleteIsAsynchronous covers the realistic delay.
	sim, c, _ := newSim(t, dosim.Options{DropletLimit: 100, DeleteDelay: -1})
	ctx := context.Background()
	var names []string
	for i := 1; i <= 10; i++ {
		names = append(names, fmt.Sprintf("app-%d", i))
	}
	ds, resp, err := c.Droplets.CreateMultiple(ctx, &godo.DropletMultiCreateRequest{Names: names, Region: "fra1",
		Size: "s-1vcpu-1gb", Image: godo.DropletCreateImage{Slug: "debian-12-x64"}, Tags: []string{"brine", "app"}})
	if err != nil || len(ds) != 10 || len(resp.Links.Actions) != 10 {
		t.Fatalf("create multiple: %d droplets, %v", len(ds), err)
	}
	_, _, err = c.Droplets.CreateMultiple(ctx, &godo.DropletMultiCreateRequest{Names: append(names, "eleven"), Region: "fra1",
		Size: "s-1vcpu-1gb", Image: godo.DropletCreateImage{Slug: "debian-12-x64"}})
	assertAPIError(t, err, 422, "up to 10")
	for i := 1; i <= 13; i++ {
		if _, _, err := c.Droplets.Create(ctx, createReq(fmt.Sprintf("db-%d", i), "db")); err != nil {
			t.Fatal(err)
		}
	}

	// Walk every page the way godo's users do, following links.pages.
	var seen []string
	opt := &godo.ListOptions{PerPage: 7}
	pagesSeen := 0
	for {
		page, resp, err := c.Droplets.List(ctx, opt)
		if err != nil {
			t.Fatal(err)
		}
		pagesSeen++
		if resp.Meta.Total != 23 {
			t.Fatalf("meta.total = %d", resp.Meta.Total)
		}
		for _, d := range page {
			seen = append(seen, d.Name)
		}
		if resp.Links == nil || resp.Links.IsLastPage() {
			break
		}
		cur, err := resp.Links.CurrentPage()
		if err != nil {
			t.Fatal(err)
		}
		opt.Page = cur + 1
	}
	if pagesSeen != 4 || len(seen) != 23 || !slices.Contains(seen, "db-13") || !slices.Contains(seen, "app-1") {
		t.Fatalf("pagination: %d pages, %d droplets: %v", pagesSeen, len(seen), seen)
	}

	byTag, _, err := c.Droplets.ListByTag(ctx, "app", &godo.ListOptions{PerPage: 200})
	if err != nil || len(byTag) != 10 {
		t.Fatalf("tag filter: %d, %v", len(byTag), err)
	}
	for _, d := range byTag { // a droplet still "new" ignores a delete
		waitActive(t, c, d.ID)
	}
	byName, _, err := c.Droplets.ListByName(ctx, "DB-7", nil)
	if err != nil || len(byName) != 1 || byName[0].Name != "db-7" {
		t.Fatalf("name filter: %+v, %v", byName, err)
	}

	if _, err := c.Droplets.DeleteByTag(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	if left := sim.Droplets(); len(left) != 13 {
		t.Fatalf("after delete by tag: %d droplets", len(left))
	}
	resp2, err := c.Droplets.Delete(ctx, byName[0].ID)
	if err != nil || resp2.StatusCode != http.StatusNoContent {
		t.Fatalf("delete: %v", err)
	}
	_, _, err = c.Droplets.Get(ctx, byName[0].ID)
	assertAPIError(t, err, 404, "could not be found")
	_, err = c.Droplets.Delete(ctx, byName[0].ID)
	assertAPIError(t, err, 404, "could not be found")
}

// assertAPIError checks a godo error carries DigitalOcean's status and message.
func assertAPIError(t *testing.T, err error, status int, msg string) {
	t.Helper()
	var er *godo.ErrorResponse
	if !errors.As(err, &er) {
		t.Fatalf("want an API error %d, got %v", status, err)
	}
	if er.Response.StatusCode != status || !strings.Contains(er.Message, msg) || er.RequestID == "" {
		t.Fatalf("want %d %q, got %d %q (request id %q)", status, msg, er.Response.StatusCode, er.Message, er.RequestID)
	}
}

func TestErrorShapes(t *testing.T) {
	sim, c, base := newSim(t, dosim.Options{DropletLimit: 2})
	ctx := context.Background()

	// The raw body is DigitalOcean's {"id": ..., "message": ...}.
	req, _ := http.NewRequest("GET", base+"/v2/droplets/999", nil)
	req.Header.Set("Authorization", "Bearer "+sim.Token())
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]string
	_ = json.NewDecoder(res.Body).Decode(&body)
	res.Body.Close()
	if res.StatusCode != 404 || body["id"] != "not_found" || body["message"] == "" {
		t.Fatalf("404 body: %d %v", res.StatusCode, body)
	}

	bad, _ := godo.New(&http.Client{Transport: bearer{"wrong"}}, godo.SetBaseURL(base+"/"))
	_, _, err = bad.Droplets.List(ctx, nil)
	assertAPIError(t, err, 401, "Unable to authenticate you")

	_, _, err = c.Droplets.Create(ctx, createReq("bad_name"))
	assertAPIError(t, err, 422, "invalid")
	r := createReq("x")
	r.Region = "mars1"
	_, _, err = c.Droplets.Create(ctx, r)
	assertAPIError(t, err, 422, "invalid region")
	r = createReq("x")
	r.SSHKeys = []godo.DropletCreateSSHKey{{ID: 42}}
	_, _, err = c.Droplets.Create(ctx, r)
	assertAPIError(t, err, 422, "ssh_keys")

	for _, n := range []string{"a", "b"} {
		if _, _, err := c.Droplets.Create(ctx, createReq(n)); err != nil {
			t.Fatal(err)
		}
	}
	_, _, err = c.Droplets.Create(ctx, createReq("c"))
	assertAPIError(t, err, 422, "droplet limit")

	sim.Inject(dosim.Fault{Method: "GET", Path: "/v2/droplets", Status: 429, RetryAfter: 1500 * time.Millisecond})
	_, resp, err := c.Droplets.List(ctx, nil)
	assertAPIError(t, err, 429, "Rate limit")
	if ra := resp.Header.Get("Retry-After"); ra != "2" {
		t.Fatalf("Retry-After = %q, want 2", ra)
	}
	sim.Inject(dosim.Fault{Status: 503, Times: 2})
	for range 2 {
		_, _, err = c.Regions.List(ctx, nil)
		assertAPIError(t, err, 503, "unable")
	}
	if _, _, err := c.Regions.List(ctx, nil); err != nil {
		t.Fatalf("fault not used up: %v", err)
	}
}

func TestMinuteLimit(t *testing.T) {
	_, c, _ := newSim(t, dosim.Options{PerMinute: 5})
	ctx := context.Background()
	for range 5 {
		if _, _, err := c.Sizes.List(ctx, nil); err != nil {
			t.Fatal(err)
		}
	}
	_, resp, err := c.Sizes.List(ctx, nil)
	assertAPIError(t, err, 429, "Rate limit")
	if resp.Header.Get("Retry-After") == "" {
		t.Fatal("429 without Retry-After")
	}
}

func TestActionsKeysCatalog(t *testing.T) {
	_, c, _ := newSim(t, dosim.Options{BootDelay: 50 * time.Millisecond})
	ctx := context.Background()
	d, _, err := c.Droplets.Create(ctx, createReq("web-1"))
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = c.DropletActions.Reboot(ctx, d.ID)
	assertAPIError(t, err, 422, "being created")
	waitActive(t, c, d.ID)
	a, _, err := c.DropletActions.PowerOff(ctx, d.ID)
	if err != nil || a.Type != "power_off" {
		t.Fatalf("power off: %+v %v", a, err)
	}
	got, _, err := c.DropletActions.Get(ctx, d.ID, a.ID)
	if err != nil || got.Status != "completed" {
		t.Fatalf("action: %+v %v", got, err)
	}
	if d2, _, _ := c.Droplets.Get(ctx, d.ID); d2.Status != "off" {
		t.Fatalf("status after power_off: %s", d2.Status)
	}
	acts, _, err := c.Droplets.Actions(ctx, d.ID, nil)
	if err != nil || len(acts) != 2 {
		t.Fatalf("droplet actions: %d %v", len(acts), err)
	}
	all, _, err := c.Actions.List(ctx, nil)
	if err != nil || len(all) != 2 {
		t.Fatalf("actions: %d %v", len(all), err)
	}

	k, _, err := c.Keys.Create(ctx, &godo.KeyCreateRequest{Name: "ci",
		PublicKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE3bKq7S3Jc0hUz5cTf+9i4lQy8y0R7H0c3qYw0nUqJw ci@x"})
	if err != nil || k.Fingerprint == "" {
		t.Fatalf("key create: %+v %v", k, err)
	}
	if _, _, err := c.Keys.GetByFingerprint(ctx, k.Fingerprint); err != nil {
		t.Fatal(err)
	}
	keys, _, err := c.Keys.List(ctx, nil)
	if err != nil || len(keys) != 2 {
		t.Fatalf("keys: %d %v", len(keys), err)
	}
	r := createReq("web-2")
	r.SSHKeys = []godo.DropletCreateSSHKey{{Fingerprint: k.Fingerprint}, {ID: keys[0].ID}}
	if _, _, err := c.Droplets.Create(ctx, r); err != nil {
		t.Fatalf("create with keys: %v", err)
	}
	if _, err := c.Keys.DeleteByID(ctx, k.ID); err != nil {
		t.Fatal(err)
	}

	regions, _, err := c.Regions.List(ctx, nil)
	if err != nil || len(regions) != 11 || !regions[0].Available {
		t.Fatalf("regions: %+v %v", regions, err)
	}
	sizes, _, err := c.Sizes.List(ctx, nil)
	if err != nil || len(sizes) < 3 || sizes[1].Slug != "s-1vcpu-1gb" {
		t.Fatalf("sizes: %+v %v", sizes, err)
	}
	imgs, _, err := c.Images.ListDistribution(ctx, nil)
	if err != nil || len(imgs) != 3 {
		t.Fatalf("images: %d %v", len(imgs), err)
	}
	im, _, err := c.Images.GetBySlug(ctx, "ubuntu-24-04-x64")
	if err != nil || im.Distribution != "Ubuntu" {
		t.Fatalf("image: %+v %v", im, err)
	}
	acct, _, err := c.Account.Get(ctx)
	if err != nil || acct.DropletLimit != 25 {
		t.Fatalf("account: %+v %v", acct, err)
	}
}

func TestDomainsRecords(t *testing.T) {
	_, c, _ := newSim(t, dosim.Options{})
	ctx := context.Background()
	if _, _, err := c.Domains.Create(ctx, &godo.DomainCreateRequest{Name: "example.com", IPAddress: "198.18.0.10"}); err != nil {
		t.Fatal(err)
	}
	_, _, err := c.Domains.Create(ctx, &godo.DomainCreateRequest{Name: "example.com"})
	assertAPIError(t, err, 422, "already exists")
	recs, _, err := c.Domains.Records(ctx, "example.com", nil)
	if err != nil || len(recs) != 5 { // SOA, 3 NS, A
		t.Fatalf("default records: %+v %v", recs, err)
	}
	rec, _, err := c.Domains.CreateRecord(ctx, "example.com", &godo.DomainRecordEditRequest{Type: "A", Name: "www", Data: "198.18.0.11", TTL: 60})
	if err != nil || rec.ID == 0 || rec.TTL != 60 {
		t.Fatalf("create record: %+v %v", rec, err)
	}
	_, _, err = c.Domains.CreateRecord(ctx, "example.com", &godo.DomainRecordEditRequest{Type: "A", Name: "bad", Data: "not-an-ip"})
	assertAPIError(t, err, 422, "IPv4")
	// The name filter takes the fully qualified name.
	got, _, err := c.Domains.RecordsByTypeAndName(ctx, "example.com", "A", "www.example.com", nil)
	if err != nil || len(got) != 1 || got[0].Data != "198.18.0.11" {
		t.Fatalf("records by type and name: %+v %v", got, err)
	}
	if got, _, _ := c.Domains.RecordsByTypeAndName(ctx, "example.com", "A", "www", nil); len(got) != 0 {
		t.Fatalf("a short name matched the fqdn filter: %+v", got)
	}
	ed, _, err := c.Domains.EditRecord(ctx, "example.com", rec.ID, &godo.DomainRecordEditRequest{Data: "198.18.0.12"})
	if err != nil || ed.Data != "198.18.0.12" || ed.TTL != 60 {
		t.Fatalf("edit: %+v %v", ed, err)
	}
	if _, err := c.Domains.DeleteRecord(ctx, "example.com", rec.ID); err != nil {
		t.Fatal(err)
	}
	_, _, err = c.Domains.Record(ctx, "example.com", rec.ID)
	assertAPIError(t, err, 404, "could not be found")
	_, _, err = c.Domains.Records(ctx, "nope.com", nil)
	assertAPIError(t, err, 404, "could not be found")
	dom, _, err := c.Domains.Get(ctx, "example.com")
	if err != nil || !strings.Contains(dom.ZoneFile, "ns1.digitalocean.com") {
		t.Fatalf("domain: %+v %v", dom, err)
	}
}

type recBooter struct {
	mu        sync.Mutex
	booted    map[string]string // name -> user data
	destroyed []string
	fail      string
}

func (b *recBooter) Boot(_ context.Context, d dosim.Droplet, userData string) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if d.Name == b.fail {
		return "", errors.New("no host")
	}
	b.booted[d.Name] = userData
	return "127.0.0.42", nil
}

func (b *recBooter) Destroy(name string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.destroyed = append(b.destroyed, name)
}

func TestBooterHook(t *testing.T) {
	b := &recBooter{booted: map[string]string{}, fail: "broken"}
	sim, c, _ := newSim(t, dosim.Options{Booter: b})
	ctx := context.Background()
	d, _, err := c.Droplets.Create(ctx, createReq("web-1"))
	if err != nil {
		t.Fatal(err)
	}
	got := waitActive(t, c, d.ID)
	if ip, _ := got.PublicIPv4(); ip != "127.0.0.42" {
		t.Fatalf("booter address not used: %s", ip)
	}
	b.mu.Lock()
	ud := b.booted["web-1"]
	b.mu.Unlock()
	if ud != "#!/bin/sh\necho hi\n" {
		t.Fatalf("user data: %q", ud)
	}
	broken, resp, err := c.Droplets.Create(ctx, createReq("broken"))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		a, _, err := c.Actions.Get(ctx, resp.Links.Actions[0].ID)
		if err != nil {
			t.Fatal(err)
		}
		if a.Status == "errored" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("failed boot never errored the create action")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if bd, _, _ := c.Droplets.Get(ctx, broken.ID); bd.Status != "new" {
		t.Fatalf("failed boot: status %s", bd.Status)
	}
	if _, err := c.Droplets.Delete(ctx, d.ID); err != nil {
		t.Fatal(err)
	}
	sim.Close() // waits for Destroy
	b.mu.Lock()
	defer b.mu.Unlock()
	if !slices.Equal(b.destroyed, []string{"web-1"}) {
		t.Fatalf("destroyed: %v", b.destroyed)
	}
}

func TestStartListensOnLoopback(t *testing.T) {
	sim := dosim.New(dosim.Options{Token: "t0k"})
	u, err := sim.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	if !strings.HasPrefix(u, "http://127.0.0.1:") || sim.URL() != u {
		t.Fatalf("url %q", u)
	}
	res, err := http.Get(u + "v2/regions")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 401 || !strings.Contains(string(b), `"id":"unauthorized"`) {
		t.Fatalf("no token: %d %s", res.StatusCode, b)
	}
}
