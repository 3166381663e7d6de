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

// ManagedTag marks every droplet brine made; destroy refuses droplets without it. DigitalOcean
// tags are case stable: the capitalisation a tag was first made with in the account is the one
// the API answers with (an account may already have "Brine"), so brine compares tags without
// regard to case and never relies on the API's tag_name filter.
const ManagedTag = "brine"

// profileTag records which profile made a droplet.
func profileTag(profile string) string { return "brine-profile:" + profile }

// hasTag reports whether tags hold tag, compared case-insensitively.
func hasTag(tags []string, tag string) bool {
	return slices.ContainsFunc(tags, func(t string) bool { return strings.EqualFold(t, tag) })
}

// tagValue returns the rest of the first tag starting with prefix (case-insensitively).
func tagValue(tags []string, prefix string) (string, bool) {
	for _, t := range tags {
		if len(t) >= len(prefix) && strings.EqualFold(t[:len(prefix)], prefix) {
			return t[len(prefix):], true
		}
	}
	return "", false
}

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
		Managed: hasTag(d.Tags, ManagedTag)}
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
	out.Profile, _ = tagValue(d.Tags, "brine-profile:")
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

// listAll lists droplets (with tag, compared case-insensitively, or all when tag is ""),
// every page, GPU droplets included: DigitalOcean lists those only with type=gpus, which cannot
// be combined with its tag filter.
func (c *Client) listAll(ctx context.Context, tag string) ([]godo.Droplet, error) {
	var all []godo.Droplet
	for _, gpus := range []bool{false, true} {
		opt := &godo.ListOptions{Page: 1, PerPage: 200}
		for {
			var (
				page []godo.Droplet
				resp *godo.Response
				err  error
			)
			if gpus {
				page, resp, err = c.do.Droplets.ListWithGPUs(ctx, opt)
			} else {
				page, resp, err = c.do.Droplets.List(ctx, opt)
			}
			if err != nil {
				return nil, fmt.Errorf("list droplets: %w", err)
			}
			for _, d := range page {
				if tag == "" || hasTag(d.Tags, tag) {
					all = append(all, d)
				}
			}
			if resp.Links == nil || resp.Links.IsLastPage() || len(page) == 0 {
				break
			}
			opt.Page++
			if opt.Page > maxListPages {
				return nil, fmt.Errorf("list droplets: %w", errTooManyPages)
			}
		}
	}
	return all, nil
}

// DestroyRequest names droplets to destroy.
type DestroyRequest struct {
	Names []string
	// DryRun plans only: it reports what would be destroyed and changes nothing.
	DryRun bool
	// Timeout bounds, per droplet, the wait for a locked droplet to unlock and for a deleted
	// one to be gone (404); zero means DefaultDeleteTimeout.
	Timeout time.Duration
}

// DefaultDeleteTimeout bounds the wait for a deleted droplet to be gone. DigitalOcean answers a
// delete at once and removes the droplet later, sometimes after more than a minute
// (terraform-provider-digitalocean #1586), sometimes never (#283).
const DefaultDeleteTimeout = 5 * time.Minute

// DestroyResult says what was (or, on a dry run, would be) destroyed.
type DestroyResult struct {
	DryRun    bool      `json:"dry_run"`
	Destroyed []Droplet `json:"destroyed"`
	// Failed maps droplet names to why their delete failed.
	Failed map[string]string `json:"failed,omitempty"`
}

// Destroy deletes the named droplets and waits until each is gone. It plans first and refuses
// the whole request, deleting nothing, when a name matches no droplet, matches several, or
// names a droplet without the brine tag (brine never destroys what it did not make). A droplet
// that is still there after Timeout (or whose destroy DigitalOcean reports as errored) is in
// Failed, not Destroyed.
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
		case !hasTag(ds[0].Tags, ManagedTag):
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
	return c.deleteDroplets(ctx, res.Destroyed, req.Timeout)
}

// deleteDroplets deletes droplets in parallel (paced by the transport) and waits for each to be
// gone. A 404 counts as destroyed: the droplet is gone either way.
func (c *Client) deleteDroplets(ctx context.Context, ds []Droplet, timeout time.Duration) (*DestroyResult, error) {
	if timeout <= 0 {
		timeout = DefaultDeleteTimeout
	}
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
			err := c.deleteAndWait(ctx, d, timeout)
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

// deleteAndWait deletes one droplet and waits, at most timeout, until it 404s. It never sends
// the delete while the droplet is locked (an event in progress refuses it with 422: hashicorp/
// terraform #1057 waits for the unlock); it asks again while the droplet is still "new" (which
// ignores a delete: test-kitchen/kitchen-digitalocean #40); it stops at once when DigitalOcean
// reports the droplet's destroy action errored.
func (c *Client) deleteAndWait(ctx context.Context, d Droplet, timeout time.Duration) error {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	sent := false // a delete was sent while the droplet could take it
	state := "unknown"
	for poll := 0; ; poll++ {
		cur, _, err := c.do.Droplets.Get(wctx, d.ID)
		switch {
		case isStatus(err, http.StatusNotFound):
			return nil
		case err != nil && wctx.Err() == nil:
			return fmt.Errorf("check droplet %s (id %d): %w", d.Name, d.ID, err)
		case err == nil:
			state = cur.Status
			if cur.Locked {
				state += ", locked"
			}
			switch {
			case cur.Locked:
				c.log.Info("droplet is locked; waiting before deleting it", "droplet", d.Name, "id", d.ID)
			case !sent || cur.Status == "new":
				_, derr := c.do.Droplets.Delete(wctx, d.ID)
				switch {
				case isStatus(derr, http.StatusNotFound):
					return nil
				case isStatus(derr, http.StatusUnprocessableEntity):
					c.log.Info("delete refused; waiting", "droplet", d.Name, "id", d.ID, "err", derr)
				case derr != nil && wctx.Err() == nil:
					return fmt.Errorf("delete droplet %s (id %d): %w", d.Name, d.ID, derr)
				case derr == nil:
					sent = cur.Status != "new"
				}
			case poll%5 == 4: // now and then, ask whether DigitalOcean gave up
				if st, _ := c.destroyAction(wctx, d.ID); st == "errored" {
					return fmt.Errorf("DigitalOcean accepted the delete of %s (id %d) but its destroy action errored; the droplet still exists (%s): delete it in the console", d.Name, d.ID, state)
				}
			}
		}
		t := time.NewTimer(c.poll)
		select {
		case <-wctx.Done():
			t.Stop()
			if ctx.Err() != nil {
				return fmt.Errorf("interrupted while waiting for droplet %s (id %d) to be deleted", d.Name, d.ID)
			}
			if !sent {
				return fmt.Errorf("droplet %s (id %d) is still %s after %s; not deleted", d.Name, d.ID, state, timeout)
			}
			return fmt.Errorf("droplet %s (id %d) still exists (%s) %s after its delete was accepted; DigitalOcean has not removed it", d.Name, d.ID, state, timeout)
		case <-t.C:
		}
	}
}

// destroyAction returns the status of the droplet's latest "destroy" action, "" if none.
func (c *Client) destroyAction(ctx context.Context, id int) (string, error) {
	acts, _, err := c.do.Droplets.Actions(ctx, id, &godo.ListOptions{Page: 1, PerPage: 20})
	if err != nil {
		return "", err
	}
	best, status := 0, ""
	for _, a := range acts {
		if a.Type == "destroy" && a.ID > best {
			best, status = a.ID, a.Status
		}
	}
	return status, nil
}

// dying returns the ids of droplets whose delete is in progress: the account's in-progress
// "destroy" actions (one request; the newest 200 actions of the account).
func (c *Client) dying(ctx context.Context) (map[int]bool, error) {
	acts, _, err := c.do.Actions.List(ctx, &godo.ListOptions{Page: 1, PerPage: 200})
	if err != nil {
		return nil, fmt.Errorf("list actions: %w", err)
	}
	out := map[int]bool{}
	for _, a := range acts {
		if a.Type == "destroy" && a.ResourceType == "droplet" && a.Status == "in-progress" {
			out[a.ResourceID] = true
		}
	}
	return out, nil
}

// waitGone waits, at most timeout, for a droplet being deleted to 404.
func (c *Client) waitGone(ctx context.Context, d Droplet, timeout time.Duration) error {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		_, _, err := c.do.Droplets.Get(wctx, d.ID)
		if isStatus(err, http.StatusNotFound) {
			return nil
		}
		t := time.NewTimer(c.poll)
		select {
		case <-wctx.Done():
			t.Stop()
			return fmt.Errorf("%s (id %d) is being destroyed and still exists after %s", d.Name, d.ID, timeout)
		case <-t.C:
		}
	}
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
// interval (per-droplet GETs would spend the rate limit on polling). A droplet missing from the
// list is looked up by id, and its create action read: DigitalOcean can accept a create (202)
// and then fail it, the action "errored" and the droplet gone (terraform-provider-digitalocean
// #1493), and its listing can lag the create.
type waiter struct {
	c    *Client
	mu   sync.Mutex // guards subs
	subs map[int]*watch
	kick chan struct{}
}

type watch struct {
	action int // the create action's id, 0 when unknown (an adopted droplet)
	ch     chan waitResult
}

type waitResult struct {
	d   godo.Droplet
	err error
}

// actionCheckEvery is how many polls pass between reads of the create action of a droplet that
// is listed but still "new".
const actionCheckEvery = 10

func newWaiter(c *Client) *waiter {
	return &waiter{c: c, subs: map[int]*watch{}, kick: make(chan struct{}, 1)}
}

// watch returns a channel that receives the droplet once it is active, or why it never will be.
func (w *waiter) watch(id, action int) <-chan waitResult {
	ch := make(chan waitResult, 1)
	w.mu.Lock()
	w.subs[id] = &watch{action: action, ch: ch}
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

// run polls until ctx ends.
func (w *waiter) run(ctx context.Context) {
	t := time.NewTicker(w.c.poll)
	defer t.Stop()
	for poll := 0; ; poll++ {
		select {
		case <-ctx.Done():
			return
		case <-w.kick:
		case <-t.C:
		}
		w.mu.Lock()
		pending := make(map[int]*watch, len(w.subs))
		for id, s := range w.subs {
			pending[id] = s
		}
		w.mu.Unlock()
		if len(pending) == 0 {
			continue
		}
		ds, err := w.c.listAll(ctx, "")
		if err != nil {
			w.c.log.Debug("poll droplets", "err", err)
			continue
		}
		listed := map[int]godo.Droplet{}
		for _, d := range ds {
			listed[d.ID] = d
		}
		for id, s := range pending {
			d, ok := listed[id]
			var res *waitResult
			switch {
			case ok && d.Status == "active":
				res = &waitResult{d: d}
			case ok && poll%actionCheckEvery == actionCheckEvery-1:
				res = w.checkAction(ctx, id, s)
			case !ok:
				// Not listed (yet): the listing may lag, so ask for the droplet itself.
				got, _, gerr := w.c.do.Droplets.Get(ctx, id)
				switch {
				case gerr == nil && got.Status == "active":
					res = &waitResult{d: *got}
				case gerr == nil || isStatus(gerr, http.StatusNotFound):
					res = w.checkAction(ctx, id, s)
				}
			}
			if res != nil {
				w.mu.Lock()
				if w.subs[id] == s {
					s.ch <- *res
					delete(w.subs, id)
				}
				w.mu.Unlock()
			}
		}
	}
}

// checkAction reads a droplet's create action and returns a failure when it errored.
func (w *waiter) checkAction(ctx context.Context, id int, s *watch) *waitResult {
	if s.action == 0 {
		return nil
	}
	a, _, err := w.c.do.Actions.Get(ctx, s.action)
	if err != nil || a.Status != "errored" {
		return nil
	}
	return &waitResult{err: fmt.Errorf("DigitalOcean accepted the create of droplet id %d, then its create action (id %d) errored", id, s.action)}
}
