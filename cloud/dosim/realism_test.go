package dosim_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/brinecm/brine/cloud/dosim"
	"github.com/brinecm/brine/internal/tb"
	"github.com/digitalocean/godo"
)

// destroyAction returns the droplet's "destroy" action, if any.
func destroyAction(t *testing.T, c *godo.Client, id int) *godo.Action {
	t.Helper()
	acts, _, err := c.Droplets.Actions(context.Background(), id, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range acts {
		if a.Type == "destroy" {
			return &a
		}
	}
	return nil
}

// A delete is accepted before it happens: the droplet is still listed, unchanged, with a
// destroy action in progress, and 404s only later.
func TestDeleteIsAsynchronous(t *testing.T) {
	_, c, _ := newSim(t, dosim.Options{DeleteDelay: time.Hour})
	ctx := context.Background()
	d, _, err := c.Droplets.Create(ctx, createReq("web-1"))
	if err != nil {
		t.Fatal(err)
	}
	waitActive(t, c, d.ID)
	if _, err := c.Droplets.Delete(ctx, d.ID); err != nil {
		t.Fatal(err)
	}
	got, _, err := c.Droplets.Get(ctx, d.ID)
	if err != nil || got.Status != "active" {
		t.Fatalf("right after the delete: %+v %v", got, err)
	}
	if ds, _, _ := c.Droplets.List(ctx, nil); len(ds) != 1 {
		t.Fatalf("a deleting droplet is no longer listed: %+v", ds)
	}
	if a := destroyAction(t, c, d.ID); a == nil || a.Status != "in-progress" {
		t.Fatalf("destroy action: %+v", a)
	}
	// A second delete is accepted and changes nothing.
	if _, err := c.Droplets.Delete(ctx, d.ID); err != nil {
		t.Fatal(err)
	}

	// With a short delay the droplet does go, and its destroy action completes.
	_, c2, _ := newSim(t, dosim.Options{DeleteDelay: 20 * time.Millisecond})
	d2, _, _ := c2.Droplets.Create(ctx, createReq("web-2"))
	waitActive(t, c2, d2.ID)
	if _, err := c2.Droplets.Delete(ctx, d2.ID); err != nil {
		t.Fatal(err)
	}
	tb.WaitFor(t, 10*time.Second, "the deleted droplet 404s", func() bool {
		_, _, err := c2.Droplets.Get(ctx, d2.ID)
		return err != nil
	})
	_, _, err = c2.Droplets.Get(ctx, d2.ID)
	assertAPIError(t, err, 404, "could not be found")
}

// A droplet still "new" ignores a delete, a locked one refuses it, and a NeverDeleted one
// accepts it and stays, its destroy action errored.
func TestDeleteIgnoredRefusedNeverDone(t *testing.T) {
	_, c, _ := newSim(t, dosim.Options{
		DeleteDelay:  10 * time.Millisecond,
		Stuck:        func(n string) bool { return n == "new-1" },
		Locked:       func(n string) bool { return n == "locked-1" },
		NeverDeleted: func(n string) bool { return n == "sticky-1" },
	})
	ctx := context.Background()
	nd, _, _ := c.Droplets.Create(ctx, createReq("new-1"))
	if _, err := c.Droplets.Delete(ctx, nd.ID); err != nil {
		t.Fatal(err)
	}
	if got, _, err := c.Droplets.Get(ctx, nd.ID); err != nil || got.Status != "new" || destroyAction(t, c, nd.ID) != nil {
		t.Fatalf("a new droplet's delete was not ignored: %+v %v", got, err)
	}
	ld, _, _ := c.Droplets.Create(ctx, createReq("locked-1"))
	waitActive(t, c, ld.ID)
	if !ld.Locked {
		t.Fatal("the locked droplet lists unlocked")
	}
	_, err := c.Droplets.Delete(ctx, ld.ID)
	assertAPIError(t, err, 422, "pending event")

	sd, _, _ := c.Droplets.Create(ctx, createReq("sticky-1"))
	waitActive(t, c, sd.ID)
	if _, err := c.Droplets.Delete(ctx, sd.ID); err != nil {
		t.Fatal(err)
	}
	tb.WaitFor(t, 10*time.Second, "the destroy action errors", func() bool {
		a := destroyAction(t, c, sd.ID)
		return a != nil && a.Status == "errored"
	})
	if got, _, err := c.Droplets.Get(ctx, sd.ID); err != nil || got.Status != "active" {
		t.Fatalf("never-deleted droplet: %+v %v", got, err)
	}
}

// A create can fail after its 202: the create action errors and the droplet 404s.
func TestCreateErrorsAfterAccepted(t *testing.T) {
	_, c, _ := newSim(t, dosim.Options{CreateErrors: func(n string) bool { return n == "doomed" }})
	ctx := context.Background()
	d, resp, err := c.Droplets.Create(ctx, createReq("doomed"))
	if err != nil || resp.StatusCode != 202 || len(resp.Links.Actions) != 1 {
		t.Fatalf("create: %v", err)
	}
	aid := resp.Links.Actions[0].ID
	tb.WaitFor(t, 10*time.Second, "the create action errors", func() bool {
		a, _, err := c.Actions.Get(ctx, aid)
		return err == nil && a.Status == "errored"
	})
	_, _, err = c.Droplets.Get(ctx, d.ID)
	assertAPIError(t, err, 404, "could not be found")
}

// A committed fault answers 5xx to a create that made the droplet; a late listing and late
// tags hide it from list and tag filters for a while; a GET by id finds it at once.
func TestCommittedFaultLateListingLateTags(t *testing.T) {
	sim, c, _ := newSim(t, dosim.Options{ListDelay: time.Hour, TagDelay: time.Hour})
	ctx := context.Background()
	sim.Inject(dosim.Fault{Method: "POST", Path: "/v2/droplets", Status: 503, Committed: true})
	_, _, err := c.Droplets.Create(ctx, createReq("web-1", "brine"))
	assertAPIError(t, err, 503, "unable")
	made := sim.Droplets()
	if len(made) != 1 || made[0].Name != "web-1" || len(made[0].Tags) != 0 {
		t.Fatalf("the 503'd create made %+v", made)
	}
	if ds, _, _ := c.Droplets.ListByName(ctx, "web-1", nil); len(ds) != 0 {
		t.Fatalf("listed before ListDelay: %+v", ds)
	}
	if got, _, err := c.Droplets.Get(ctx, made[0].ID); err != nil || got.Name != "web-1" {
		t.Fatalf("get by id: %+v %v", got, err)
	}

	sim2, c2, _ := newSim(t, dosim.Options{ListDelay: 20 * time.Millisecond, TagDelay: 40 * time.Millisecond})
	d, _, err := c2.Droplets.Create(ctx, createReq("web-2", "brine"))
	if err != nil || len(d.Tags) != 0 {
		t.Fatalf("create answered tags before TagDelay: %+v %v", d, err)
	}
	tb.WaitFor(t, 10*time.Second, "listed and tagged", func() bool {
		ds, _, _ := c2.Droplets.ListByTag(ctx, "brine", nil)
		return len(ds) == 1 && slices.Equal(ds[0].Tags, []string{"brine"})
	})
	_ = sim2
}

// Sizes are offered per region; a region may be a prefix or omitted; custom images are integer
// ids in some regions; GPU droplets list only with type=gpus.
func TestCatalogRegionsImagesGPUs(t *testing.T) {
	_, c, _ := newSim(t, dosim.Options{})
	ctx := context.Background()
	r := createReq("small")
	r.Region, r.Size = "ams3", "s-1vcpu-512mb-10gb"
	_, _, err := c.Droplets.Create(ctx, r)
	assertAPIError(t, err, 422, "not available in this region")
	r.Region = "fra1"
	if _, _, err := c.Droplets.Create(ctx, r); err != nil {
		t.Fatal(err)
	}
	r = createReq("prefixed")
	r.Region = "nyc"
	if d, _, err := c.Droplets.Create(ctx, r); err != nil || d.Region.Slug != "nyc1" {
		t.Fatalf("region prefix: %+v %v", d, err)
	}
	r = createReq("anywhere")
	r.Region = ""
	if d, _, err := c.Droplets.Create(ctx, r); err != nil || d.Region == nil || d.Region.Slug == "" {
		t.Fatalf("region omitted: %+v %v", d, err)
	}
	r = createReq("nowhere")
	r.Region = "xyz9"
	_, _, err = c.Droplets.Create(ctx, r)
	assertAPIError(t, err, 422, "invalid region")
	r = createReq("nyc2")
	r.Region = "nyc2"
	_, _, err = c.Droplets.Create(ctx, r)
	assertAPIError(t, err, 422, "not available")

	im, _, err := c.Images.GetByID(ctx, dosim.CustomImageID)
	if err != nil || im.Slug != "" || im.Public || im.Type != "custom" {
		t.Fatalf("custom image: %+v %v", im, err)
	}
	r = createReq("golden")
	r.Image = godo.DropletCreateImage{ID: dosim.CustomImageID}
	if d, _, err := c.Droplets.Create(ctx, r); err != nil || d.Image.ID != dosim.CustomImageID {
		t.Fatalf("custom image create: %+v %v", d, err)
	}
	r.Name, r.Region = "golden-fra", "fra1"
	_, _, err = c.Droplets.Create(ctx, r)
	assertAPIError(t, err, 422, "invalid image")

	r = createReq("gpu-1", "brine")
	r.Region, r.Size = "tor1", "gpu-h100x1-80gb"
	if _, _, err := c.Droplets.Create(ctx, r); err != nil {
		t.Fatal(err)
	}
	plain, _, _ := c.Droplets.List(ctx, &godo.ListOptions{PerPage: 200})
	gpus, _, err := c.Droplets.ListWithGPUs(ctx, nil)
	if err != nil || len(gpus) != 1 || gpus[0].Name != "gpu-1" || slices.ContainsFunc(plain, func(d godo.Droplet) bool { return d.Name == "gpu-1" }) {
		t.Fatalf("gpu listing: plain %d, gpus %+v %v", len(plain), gpus, err)
	}
	req, _ := c.NewRequest(ctx, "GET", "v2/droplets?type=gpus&tag_name=brine", nil)
	_, err = c.Do(ctx, req, nil)
	assertAPIError(t, err, 422, "tag_name")
}

// Tags keep the capitalisation they were first made with; names must end alphanumeric.
func TestTagCaseAndNameRules(t *testing.T) {
	sim, c, _ := newSim(t, dosim.Options{})
	ctx := context.Background()
	sim.MakeTag("Brine")
	d, _, err := c.Droplets.Create(ctx, createReq("web-1", "brine", "BRINE", "env"))
	if err != nil || !slices.Equal(d.Tags, []string{"Brine", "env"}) {
		t.Fatalf("tags: %+v %v", d, err)
	}
	if ds, _, _ := c.Droplets.ListByTag(ctx, "brine", nil); len(ds) != 0 {
		t.Fatalf("the tag filter matched a non-canonical capitalisation: %+v", ds)
	}
	if ds, _, _ := c.Droplets.ListByTag(ctx, "Brine", nil); len(ds) != 1 {
		t.Fatalf("canonical tag filter: %+v", ds)
	}
	_, _, err = c.Droplets.Create(ctx, createReq("web-"))
	assertAPIError(t, err, 422, "invalid")
}

// A token without a scope gets 403, with no word of which scope.
func TestScopes(t *testing.T) {
	_, c, _ := newSim(t, dosim.Options{Scopes: []string{"droplet:read", "droplet:create", "image:read"}})
	ctx := context.Background()
	if _, _, err := c.Droplets.List(ctx, nil); err != nil {
		t.Fatal(err)
	}
	_, _, err := c.Droplets.Create(ctx, createReq("web-1", "brine"))
	assertAPIError(t, err, 403, "not authorized")
	if strings.Contains(err.Error(), "tag:create") {
		t.Fatalf("the 403 names the scope: %v", err)
	}
	d, _, err := c.Droplets.Create(ctx, createReq("web-1"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Droplets.Delete(ctx, d.ID)
	assertAPIError(t, err, 403, "not authorized")
	if got := dosim.RouteScopes("DELETE", "/v2/droplets/7"); !slices.Equal(got, []string{"droplet:delete"}) {
		t.Fatalf("RouteScopes: %v", got)
	}
}

// Host-name data must end with a dot and comes back without it; a TTL applies to its whole
// record set.
func TestRecordDataDotsAndTTLs(t *testing.T) {
	_, c, _ := newSim(t, dosim.Options{})
	ctx := context.Background()
	if _, _, err := c.Domains.Create(ctx, &godo.DomainCreateRequest{Name: "example.com"}); err != nil {
		t.Fatal(err)
	}
	_, _, err := c.Domains.CreateRecord(ctx, "example.com", &godo.DomainRecordEditRequest{Type: "CNAME", Name: "www", Data: "lb.example.net", TTL: 60})
	assertAPIError(t, err, 422, "end with a dot")
	rec, _, err := c.Domains.CreateRecord(ctx, "example.com", &godo.DomainRecordEditRequest{Type: "CNAME", Name: "www", Data: "lb.example.net.", TTL: 60})
	if err != nil || rec.Data != "lb.example.net" {
		t.Fatalf("cname: %+v %v", rec, err)
	}
	// An edit that leaves data out keeps it.
	if ed, _, err := c.Domains.EditRecord(ctx, "example.com", rec.ID, &godo.DomainRecordEditRequest{TTL: 120}); err != nil || ed.Data != "lb.example.net" {
		t.Fatalf("edit ttl: %+v %v", ed, err)
	}
	a1, _, _ := c.Domains.CreateRecord(ctx, "example.com", &godo.DomainRecordEditRequest{Type: "A", Name: "api", Data: "198.18.0.1", TTL: 60})
	a2, _, err := c.Domains.CreateRecord(ctx, "example.com", &godo.DomainRecordEditRequest{Type: "A", Name: "api", Data: "198.18.0.2", TTL: 300})
	if err != nil {
		t.Fatal(err)
	}
	got, _, _ := c.Domains.Record(ctx, "example.com", a1.ID)
	if got.TTL != 300 || a2.TTL != 300 {
		t.Fatalf("ttls not aligned: %d %d", got.TTL, a2.TTL)
	}
}
