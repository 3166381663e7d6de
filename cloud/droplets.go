package cloud

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/digitalocean/godo"
)

// ManagedTag marks every droplet brine made; destroy refuses droplets without it.
const ManagedTag = "brine"

// profileTag records which profile made a droplet.
func profileTag(profile string) string { return "brine-profile:" + profile }

// Droplet is a droplet as brine reports it.
type Droplet struct {
	ID        int      `json:"id"`
	Name      string   `json:"name"`
	Status    string   `json:"status"`
	Region    string   `json:"region"`
	Size      string   `json:"size"`
	Image     string   `json:"image"`
	PublicIP  string   `json:"public_ip,omitempty"`
	PrivateIP string   `json:"private_ip,omitempty"`
	Tags      []string `json:"tags"`
	Created   string   `json:"created_at"`
	// Managed is true when the droplet carries ManagedTag.
	Managed bool `json:"managed"`
	// Profile is the profile that made it, from its brine-profile: tag.
	Profile string `json:"profile,omitempty"`
}

func fromGodo(d godo.Droplet) Droplet {
	out := Droplet{ID: d.ID, Name: d.Name, Status: d.Status, Tags: d.Tags, Created: d.Created,
		Managed: slices.Contains(d.Tags, ManagedTag)}
	if out.Tags == nil {
		out.Tags = []string{}
	}
	if d.Region != nil {
		out.Region = d.Region.Slug
	}
	if d.Size != nil {
		out.Size = d.Size.Slug
	} else {
		out.Size = d.SizeSlug
	}
	if d.Image != nil {
		out.Image = d.Image.Slug
	}
	out.PublicIP, _ = d.PublicIPv4()
	out.PrivateIP, _ = d.PrivateIPv4()
	for _, t := range d.Tags {
		if p, ok := strings.CutPrefix(t, "brine-profile:"); ok {
			out.Profile = p
		}
	}
	return out
}

// ListOptions filter List.
type ListOptions struct {
	// All lists every droplet of the account, not only those brine made.
	All bool
	// Tag lists only droplets with this tag (default ManagedTag unless All).
	Tag string
}

// List returns droplets sorted by name, following every page.
func (c *Client) List(ctx context.Context, opts ListOptions) ([]Droplet, error) {
	tag := opts.Tag
	if tag == "" && !opts.All {
		tag = ManagedTag
	}
	ds, err := c.listAll(ctx, tag)
	if err != nil {
		return nil, err
	}
	out := make([]Droplet, 0, len(ds))
	for _, d := range ds {
		out = append(out, fromGodo(d))
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Name < out[j].Name || out[i].Name == out[j].Name && out[i].ID < out[j].ID
	})
	return out, nil
}

// listAll lists droplets (with tag, or all when tag is ""), every page.
func (c *Client) listAll(ctx context.Context, tag string) ([]godo.Droplet, error) {
	var all []godo.Droplet
	opt := &godo.ListOptions{Page: 1, PerPage: 200}
	for {
		var (
			page []godo.Droplet
			resp *godo.Response
			err  error
		)
		if tag != "" {
			page, resp, err = c.do.Droplets.ListByTag(ctx, tag, opt)
		} else {
			page, resp, err = c.do.Droplets.List(ctx, opt)
		}
		if err != nil {
			return nil, fmt.Errorf("list droplets: %w", err)
		}
		all = append(all, page...)
		if resp.Links == nil || resp.Links.IsLastPage() || len(page) == 0 {
			return all, nil
		}
		opt.Page++
	}
}

// DestroyRequest names droplets to destroy.
type DestroyRequest struct {
	Names []string
	// DryRun plans only: it reports what would be destroyed and changes nothing.
	DryRun bool
}

// DestroyResult says what was (or, on a dry run, would be) destroyed.
type DestroyResult struct {
	DryRun    bool      `json:"dry_run"`
	Destroyed []Droplet `json:"destroyed"`
	// Failed maps droplet names to why their delete failed.
	Failed map[string]string `json:"failed,omitempty"`
}

// Destroy deletes the named droplets. It plans first and refuses the whole request, deleting
// nothing, when a name matches no droplet, matches several, or names a droplet without the
// brine tag (brine never destroys what it did not make).
func (c *Client) Destroy(ctx context.Context, req DestroyRequest) (*DestroyResult, error) {
	all, err := c.listAll(ctx, "")
	if err != nil {
		return nil, err
	}
	byName := map[string][]godo.Droplet{}
	for _, d := range all {
		byName[d.Name] = append(byName[d.Name], d)
	}
	res := &DestroyResult{DryRun: req.DryRun, Destroyed: []Droplet{}}
	var problems []string
	seen := map[string]bool{}
	for _, n := range req.Names {
		if seen[n] {
			continue
		}
		seen[n] = true
		ds := byName[n]
		switch {
		case len(ds) == 0:
			problems = append(problems, fmt.Sprintf("no droplet is named %s", n))
		case len(ds) > 1:
			problems = append(problems, fmt.Sprintf("%d droplets are named %s; destroy them in the DigitalOcean console", len(ds), n))
		case !slices.Contains(ds[0].Tags, ManagedTag):
			problems = append(problems, fmt.Sprintf("%s (id %d) lacks the %q tag, so brine did not make it", n, ds[0].ID, ManagedTag))
		default:
			res.Destroyed = append(res.Destroyed, fromGodo(ds[0]))
		}
	}
	if len(problems) > 0 {
		return &DestroyResult{DryRun: req.DryRun, Destroyed: []Droplet{}}, fmt.Errorf("refusing to destroy anything: %s", strings.Join(problems, "; "))
	}
	if req.DryRun {
		return res, nil
	}
	return c.deleteDroplets(ctx, res.Destroyed)
}

// deleteDroplets deletes droplets in parallel (paced by the transport). A 404 counts as
// destroyed: the droplet is gone either way.
func (c *Client) deleteDroplets(ctx context.Context, ds []Droplet) (*DestroyResult, error) {
	res := &DestroyResult{Destroyed: []Droplet{}}
	var mu sync.Mutex // guards res
	var wg sync.WaitGroup
	sem := make(chan struct{}, 10)
	for _, d := range ds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			_, err := c.do.Droplets.Delete(ctx, d.ID)
			if isStatus(err, http.StatusNotFound) {
				err = nil
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if res.Failed == nil {
					res.Failed = map[string]string{}
				}
				res.Failed[d.Name] = err.Error()
				return
			}
			res.Destroyed = append(res.Destroyed, d)
			c.log.Info("droplet destroyed", "droplet", d.Name, "id", d.ID)
		}()
	}
	wg.Wait()
	sort.Slice(res.Destroyed, func(i, j int) bool { return res.Destroyed[i].Name < res.Destroyed[j].Name })
	if len(res.Failed) > 0 {
		names := make([]string, 0, len(res.Failed))
		for n, e := range res.Failed {
			names = append(names, n+": "+e)
		}
		sort.Strings(names)
		return res, fmt.Errorf("destroyed %d of %d droplets; failed: %s", len(res.Destroyed), len(ds), strings.Join(names, "; "))
	}
	return res, nil
}

func isStatus(err error, status int) bool {
	var er *godo.ErrorResponse
	return errors.As(err, &er) && er.Response != nil && er.Response.StatusCode == status
}

// apiStatus returns the HTTP status of an API error, or 0.
func apiStatus(err error) int {
	var er *godo.ErrorResponse
	if errors.As(err, &er) && er.Response != nil {
		return er.Response.StatusCode
	}
	return 0
}

// waiter polls droplet status for every droplet being created with one list request per
// interval (per-droplet GETs would spend the rate limit on polling).
type waiter struct {
	c    *Client
	tag  string
	mu   sync.Mutex // guards subs
	subs map[int]chan godo.Droplet
	kick chan struct{}
}

func newWaiter(c *Client, tag string) *waiter {
	return &waiter{c: c, tag: tag, subs: map[int]chan godo.Droplet{}, kick: make(chan struct{}, 1)}
}

// watch returns a channel that receives the droplet once it is active.
func (w *waiter) watch(id int) <-chan godo.Droplet {
	ch := make(chan godo.Droplet, 1)
	w.mu.Lock()
	w.subs[id] = ch
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
	return ch
}

func (w *waiter) unwatch(id int) {
	w.mu.Lock()
	delete(w.subs, id)
	w.mu.Unlock()
}

// run polls until ctx ends. A droplet missing from the list right after its create is not an
// error (terraform-provider-digitalocean #1493: a 404 after create); the caller's timeout
// decides.
func (w *waiter) run(ctx context.Context) {
	t := time.NewTicker(w.c.poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.kick:
		case <-t.C:
		}
		w.mu.Lock()
		n := len(w.subs)
		w.mu.Unlock()
		if n == 0 {
			continue
		}
		ds, err := w.c.listAll(ctx, w.tag)
		if err != nil {
			w.c.log.Debug("poll droplets", "err", err)
			continue
		}
		w.mu.Lock()
		for _, d := range ds {
			if ch, ok := w.subs[d.ID]; ok && d.Status == "active" {
				ch <- d
				delete(w.subs, d.ID)
			}
		}
		w.mu.Unlock()
	}
}
