package cloud

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/digitalocean/godo"
)

// Stage is where a droplet is on its way to a converged minion.
type Stage string

// The stages of a droplet, in order, and the two ends.
const (
	StagePlanned   Stage = "planned"   // dry run: would be created
	StageCreating  Stage = "creating"  // the create request was accepted
	StageActive    Stage = "active"    // DigitalOcean reports it running, with an address
	StageEnrolled  Stage = "enrolled"  // its minion enrolled with the master
	StageConverged Stage = "converged" // the profile's bundles applied
	StageFailed    Stage = "failed"
)

// Event is one step of one droplet, for live progress. JSON field names are a stable schema.
type Event struct {
	Time    time.Time     `json:"time"`
	Droplet string        `json:"droplet"`
	ID      int           `json:"id,omitempty"`
	Stage   Stage         `json:"stage"`
	Elapsed time.Duration `json:"-"`
	// ElapsedSeconds is Elapsed in seconds, for JSON.
	ElapsedSeconds float64 `json:"elapsed_s"`
	PublicIP       string  `json:"public_ip,omitempty"`
	Error          string  `json:"error,omitempty"`
}

// CreateRequest asks for droplets of one profile.
type CreateRequest struct {
	Profile *Profile
	Names   []string
	// Master issues enrolment tokens and reports enrolment and convergence.
	Master Master
	// ExtraTags are added to every droplet (sync adds the map's tag).
	ExtraTags []string
	// DryRun checks names against the account and reports the plan; it creates nothing and
	// does not contact the master.
	DryRun bool
	// OnEvent receives progress; calls are serialized. Nil discards.
	OnEvent func(Event)
	// Parallel bounds concurrent creates; zero means 10.
	Parallel int
	// ActiveTimeout bounds the wait for "active" per droplet; zero means 10 minutes
	// (terraform-provider-digitalocean #325: shorter defaults failed healthy creates).
	ActiveTimeout time.Duration
	// ConvergeTimeout bounds enrolment plus convergence per droplet; zero means 15 minutes.
	ConvergeTimeout time.Duration
	// TokenTTL is the enrolment token lifetime; zero means 30 minutes.
	TokenTTL time.Duration
	// AdoptWait bounds the search for a droplet that a failed create request (a 5xx or a lost
	// answer) may have made anyway, before the request is sent again: DigitalOcean can make the
	// droplet, list it late and tag it later still. Zero means 60 seconds.
	AdoptWait time.Duration
	// DeleteWait bounds the wait for a droplet of a requested name that is being destroyed to be
	// gone before its name is used again; zero means DefaultDeleteTimeout.
	DeleteWait time.Duration
}

// DropletResult is the outcome for one requested name.
type DropletResult struct {
	Name     string `json:"name"`
	ID       int    `json:"id,omitempty"`
	PublicIP string `json:"public_ip,omitempty"`
	// Stage is the last stage reached; StageConverged means done.
	Stage Stage `json:"stage"`
	// Created is true when the droplet exists (whatever happened after).
	Created bool   `json:"created"`
	Error   string `json:"error,omitempty"`
	// UserDataSHA256 identifies the user_data sent; the script itself holds an enrolment
	// token and is never kept.
	UserDataSHA256 string        `json:"user_data_sha256,omitempty"`
	Elapsed        time.Duration `json:"-"`
	ElapsedSeconds float64       `json:"elapsed_s"`
}

// CreateResult is the outcome of Create, one entry per requested name in request order.
type CreateResult struct {
	DryRun   bool            `json:"dry_run"`
	Profile  string          `json:"profile"`
	Droplets []DropletResult `json:"droplets"`
	// Existing lists the droplets of the account named like a requested one when Create was
	// interrupted or failed, so nothing is left half-known.
	Existing []Droplet `json:"existing,omitempty"`
}

// Counts returns how many droplets were created and how many converged.
func (r *CreateResult) Counts() (created, converged int) {
	for _, d := range r.Droplets {
		if d.Created {
			created++
		}
		if d.Stage == StageConverged {
			converged++
		}
	}
	return created, converged
}

// Create makes the named droplets of a profile in parallel and follows each through
// creating -> active -> enrolled -> converged. It refuses, creating nothing and minting no
// enrolment token, when a name is invalid, repeated, or already used by a droplet of the account
// (DigitalOcean allows duplicate names; brine never makes two droplets with one name), or when
// the profile's region, size or image is not in the account's live catalog. A name whose
// droplet is being destroyed is used once that droplet is gone (DeleteWait). When some droplets
// fail the result says exactly which and why, and the error counts them ("created 3 of 5 ...");
// sync resumes from there.
func (c *Client) Create(ctx context.Context, req CreateRequest) (*CreateResult, error) {
	p := req.Profile
	if p == nil {
		return nil, errors.New("create: no profile")
	}
	res := &CreateResult{DryRun: req.DryRun, Profile: p.Name, Droplets: make([]DropletResult, len(req.Names))}
	if len(req.Names) == 0 {
		return res, errors.New("create: no droplet names given")
	}
	seen := map[string]bool{}
	for i, n := range req.Names {
		res.Droplets[i] = DropletResult{Name: n, Stage: StagePlanned}
		if !ValidName(n) {
			return res, fmt.Errorf("create: %q cannot be a droplet name: it becomes the minion id, so use lower-case letters, digits, '.' and '-', starting and ending with a letter or digit", n)
		}
		if seen[n] {
			return res, fmt.Errorf("create: %s is named twice", n)
		}
		seen[n] = true
	}
	region, err := c.resolveProfile(ctx, p)
	if err != nil {
		return res, fmt.Errorf("create: nothing created: %w", err)
	}
	existing, err := c.listAll(ctx, "")
	if err != nil {
		return res, fmt.Errorf("create: check names: %w", err)
	}
	var clash []godo.Droplet
	for _, d := range existing {
		if seen[strings.ToLower(d.Name)] {
			clash = append(clash, d)
		}
	}
	var leaving []Droplet // droplets of requested names that are being destroyed
	if len(clash) > 0 {
		dying, err := c.dying(ctx)
		if err != nil {
			return res, fmt.Errorf("create: check names: %w", err)
		}
		var taken []string
		for _, d := range clash {
			if dying[d.ID] {
				leaving = append(leaving, fromGodo(d))
				continue
			}
			taken = append(taken, fmt.Sprintf("%s (id %d)", d.Name, d.ID))
		}
		if len(taken) > 0 {
			sort.Strings(taken)
			return res, fmt.Errorf("create: names already in use, nothing created: %s", strings.Join(taken, ", "))
		}
	}
	if req.DryRun {
		for _, n := range req.Names {
			c.emitter(req, time.Now())(Event{Droplet: n, Stage: StagePlanned})
		}
		return res, nil
	}
	if req.Master == nil {
		return res, errors.New("create: no master")
	}
	// The list above answered: a simulator has said whether its droplets boot. Waiting the
	// converge timeout for a droplet that cannot enrol helps nobody.
	if c.tr.simulatorNeverBoots() {
		return res, fmt.Errorf("create: %w", errNeverBoots)
	}
	// A name is used again only once DigitalOcean has removed the droplet being destroyed:
	// until then a create would make a second droplet of the name.
	for _, d := range leaving {
		wait := req.DeleteWait
		if wait <= 0 {
			wait = DefaultDeleteTimeout
		}
		c.log.Info("waiting for a droplet being destroyed to be gone before reusing its name", "droplet", d.Name, "id", d.ID)
		if err := c.waitGone(ctx, d, wait); err != nil {
			return res, fmt.Errorf("create: nothing created: %w", err)
		}
	}
	boot, err := req.Master.Bootstrap(ctx)
	if err != nil {
		return res, fmt.Errorf("create: bootstrap info: %w", err)
	}

	r := creation{c: c, req: req, boot: boot, start: time.Now(), region: region}
	r.emit = c.emitter(req, r.start)
	r.fillDefaults()
	r.tags = []string{ManagedTag, profileTag(p.Name)}
	for _, t := range append(slices.Clone(p.Tags), req.ExtraTags...) {
		if !slices.Contains(r.tags, t) {
			r.tags = append(r.tags, t)
		}
	}
	pollCtx, stopPoll := context.WithCancel(ctx)
	r.waiter = newWaiter(c)
	var pollWG sync.WaitGroup
	pollWG.Add(1)
	go func() { defer pollWG.Done(); r.waiter.run(pollCtx) }()

	var wg sync.WaitGroup
	sem := make(chan struct{}, r.req.Parallel)
	for i := range req.Names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
				defer func() { <-sem }()
			case <-ctx.Done():
				res.Droplets[i].Error = ctx.Err().Error()
				return
			}
			res.Droplets[i] = r.one(ctx, req.Names[i])
		}()
	}
	wg.Wait()
	stopPoll()
	pollWG.Wait()
	return res, c.summarize(ctx, res, req.Names)
}

// summarize turns per-droplet failures into one error and, on failure, lists what exists.
func (c *Client) summarize(ctx context.Context, res *CreateResult, names []string) error {
	var failed []string
	for _, d := range res.Droplets {
		if d.Stage != StageConverged {
			failed = append(failed, fmt.Sprintf("%s: %s", d.Name, d.Error))
		}
	}
	if len(failed) == 0 {
		return nil
	}
	// Whatever happened, say what exists: a new context, because ctx may be why we stopped.
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if ds, err := c.listAll(lctx, ""); err == nil {
		for _, d := range ds {
			if slices.Contains(names, d.Name) {
				res.Existing = append(res.Existing, fromGodo(d))
			}
		}
		// A create whose response was lost (cancelled mid-request) still made a droplet.
		for i := range res.Droplets {
			for _, e := range res.Existing {
				if e.Name == res.Droplets[i].Name && !res.Droplets[i].Created {
					res.Droplets[i].Created, res.Droplets[i].ID = true, e.ID
				}
			}
		}
	} else {
		c.log.Warn("cannot list droplets after a failed create", "err", err)
	}
	created, converged := res.Counts()
	sort.Strings(failed)
	return fmt.Errorf("created %d of %d droplets, %d converged; %s", created, len(res.Droplets), converged, strings.Join(failed, "; "))
}

func (c *Client) emitter(req CreateRequest, start time.Time) func(Event) {
	var mu sync.Mutex // serializes OnEvent calls
	return func(e Event) {
		e.Time = time.Now()
		e.Elapsed = e.Time.Sub(start)
		e.ElapsedSeconds = e.Elapsed.Seconds()
		c.log.Debug("droplet progress", "droplet", e.Droplet, "stage", e.Stage, "elapsed", e.Elapsed)
		if req.OnEvent == nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		req.OnEvent(e)
	}
}

// creation is one Create call in flight.
type creation struct {
	c      *Client
	req    CreateRequest
	boot   BootstrapInfo
	start  time.Time
	tags   []string
	emit   func(Event)
	waiter *waiter
	region string // the profile's region, or the one resolveProfile chose for it
}

func (r *creation) fillDefaults() {
	if r.req.Parallel <= 0 {
		r.req.Parallel = 10
	}
	if r.req.ActiveTimeout == 0 {
		r.req.ActiveTimeout = 10 * time.Minute
	}
	if r.req.ConvergeTimeout == 0 {
		r.req.ConvergeTimeout = 15 * time.Minute
	}
	if r.req.TokenTTL == 0 {
		r.req.TokenTTL = 30 * time.Minute
	}
	if r.req.AdoptWait <= 0 {
		r.req.AdoptWait = 60 * time.Second
	}
}

// one takes one droplet all the way; it never returns a droplet in an unknown state: Created
// is true whenever DigitalOcean accepted the create.
func (r *creation) one(ctx context.Context, name string) (out DropletResult) {
	out = DropletResult{Name: name, Stage: StagePlanned}
	defer func() {
		out.Elapsed = time.Since(r.start)
		out.ElapsedSeconds = out.Elapsed.Seconds()
		if out.Error != "" {
			r.emit(Event{Droplet: name, ID: out.ID, Stage: StageFailed, Error: out.Error, PublicIP: out.PublicIP})
		}
	}()
	p := r.req.Profile
	token, err := r.req.Master.CreateToken(ctx, name, p.Groups, r.req.TokenTTL)
	if err != nil {
		out.Error = fmt.Sprintf("enrolment token: %v", err)
		return out
	}
	ud, err := UserData(UserDataParams{Bootstrap: r.boot, MinionID: name, Groups: p.Groups, Token: token})
	if err != nil {
		out.Error = err.Error()
		return out
	}
	out.UserDataSHA256 = userDataDigest(ud)

	d, action, err := r.createOne(ctx, name, ud)
	if err != nil {
		out.Error = err.Error()
		return out
	}
	out.ID, out.Created, out.Stage = d.ID, true, StageCreating
	r.emit(Event{Droplet: name, ID: d.ID, Stage: StageCreating})

	actx, cancel := context.WithTimeout(ctx, r.req.ActiveTimeout)
	ch := r.waiter.watch(d.ID, action)
	select {
	case got := <-ch:
		cancel()
		if got.err != nil {
			// DigitalOcean gave up on it: nothing exists to enrol or to destroy.
			out.Created = false
			out.Error = fmt.Sprintf("droplet %s was not made: %v", name, got.err)
			return out
		}
		out.PublicIP, _ = got.d.PublicIPv4()
	case <-actx.Done():
		cancel()
		r.waiter.unwatch(d.ID)
		if ctx.Err() != nil {
			out.Error = fmt.Sprintf("interrupted while waiting for droplet %s (id %d) to become active", name, d.ID)
		} else {
			out.Error = fmt.Sprintf("droplet %s (id %d) still not active after %s", name, d.ID, r.req.ActiveTimeout)
		}
		return out
	}
	out.Stage = StageActive
	r.emit(Event{Droplet: name, ID: d.ID, Stage: StageActive, PublicIP: out.PublicIP})

	cctx, cancel := context.WithTimeout(ctx, r.req.ConvergeTimeout)
	defer cancel()
	if err := r.req.Master.WaitEnrolled(cctx, name); err != nil {
		out.Error = fmt.Sprintf("minion %s did not enrol: %v", name, err)
		return out
	}
	out.Stage = StageEnrolled
	r.emit(Event{Droplet: name, ID: d.ID, Stage: StageEnrolled, PublicIP: out.PublicIP})
	if len(p.Bundles) > 0 {
		if err := r.req.Master.Converge(cctx, name, p.Bundles); err != nil {
			out.Error = fmt.Sprintf("minion %s did not converge: %v", name, err)
			return out
		}
	}
	out.Stage = StageConverged
	r.emit(Event{Droplet: name, ID: d.ID, Stage: StageConverged, PublicIP: out.PublicIP})
	return out
}

// createOne sends the create request and returns the droplet and its create action's id (0
// when unknown). The transport does not repeat a POST after a 5xx or a network error, because
// DigitalOcean may have made the droplet anyway, and may list it only later and tag it later
// still. So before sending again it looks for the name, with backoff, for AdoptWait: a droplet
// of the name with the brine tag (any capitalisation) is adopted; one without it is waited on
// for its tags and, if they never come, reported, never duplicated.
func (r *creation) createOne(ctx context.Context, name, userData string) (*godo.Droplet, int, error) {
	p := r.req.Profile
	cr := &godo.DropletCreateRequest{
		Name: name, Region: r.region, Size: p.Size, Image: imageRef(p.Image),
		IPv6: p.IPv6, Monitoring: p.Monitoring, UserData: userData, Tags: r.tags, VPCUUID: p.VPCUUID,
	}
	for _, k := range p.SSHKeys {
		cr.SSHKeys = append(cr.SSHKeys, sshKeyRef(k))
	}
	const attempts = 4
	var lastErr error
	for a := 0; a < attempts; a++ {
		if a > 0 {
			d, err := r.lookFor(ctx, name, lastErr)
			if err != nil || d != nil {
				return d, 0, err
			}
		}
		d, resp, err := r.c.do.Droplets.Create(ctx, cr)
		if err == nil {
			action := 0
			if resp != nil && resp.Links != nil && len(resp.Links.Actions) > 0 {
				action = resp.Links.Actions[0].ID
			}
			return d, action, nil
		}
		lastErr = err
		st := apiStatus(err)
		if ctx.Err() != nil || (st != 0 && st < 500) || st == http.StatusNotImplemented {
			break // a 4xx will not get better by asking again
		}
	}
	return nil, 0, fmt.Errorf("create %s: %w", name, lastErr)
}

// lookFor searches, for AdoptWait with backoff, for a droplet named name that a failed create
// may have made. It returns the droplet to adopt, nil when there is none (send again), or an
// error when a droplet of the name exists but is not brine's or when looking failed.
func (r *creation) lookFor(ctx context.Context, name string, lastErr error) (*godo.Droplet, error) {
	deadline := time.Now().Add(r.req.AdoptWait)
	var untagged *godo.Droplet
	for try := 0; ; try++ {
		all, err := r.c.listAll(ctx, "")
		if err != nil {
			return nil, fmt.Errorf("create %s: %v; then looking it up failed: %w", name, lastErr, err)
		}
		var found []godo.Droplet
		for _, d := range all {
			if strings.EqualFold(d.Name, name) {
				found = append(found, d)
			}
		}
		switch {
		case len(found) > 1:
			return nil, fmt.Errorf("create %s: %v; now %d droplets have the name: check them in the console", name, lastErr, len(found))
		case len(found) == 1 && hasTag(found[0].Tags, ManagedTag):
			r.c.log.Info("create request failed but the droplet exists; adopting it", "droplet", name, "id", found[0].ID)
			return &found[0], nil
		case len(found) == 1:
			untagged = &found[0] // perhaps ours, its tags not applied yet
		}
		if time.Now().After(deadline) {
			if untagged != nil {
				return nil, fmt.Errorf("create %s: %v; a droplet of that name (id %d) appeared without the %q tag and is neither adopted nor duplicated: check it in the console",
					name, lastErr, untagged.ID, ManagedTag)
			}
			r.c.log.Info("create request failed and no droplet of the name appeared; sending it again", "droplet", name, "err", lastErr)
			return nil, nil
		}
		wait := min(jitter(r.c.backoffBase, r.c.backoffMax, try), time.Until(deadline)+time.Millisecond)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("create %s: %w", name, ctx.Err())
		case <-t.C:
		}
	}
}

// imageRef is a profile's image: an integer id (a custom image or snapshot) or a slug.
func imageRef(image string) godo.DropletCreateImage {
	if id, err := strconv.Atoi(image); err == nil && id > 0 && strconv.Itoa(id) == image {
		return godo.DropletCreateImage{ID: id}
	}
	return godo.DropletCreateImage{Slug: image}
}

// sshKeyRef accepts a key id or a fingerprint.
func sshKeyRef(k string) godo.DropletCreateSSHKey {
	var id int
	if _, err := fmt.Sscanf(k, "%d", &id); err == nil && fmt.Sprint(id) == k {
		return godo.DropletCreateSSHKey{ID: id}
	}
	return godo.DropletCreateSSHKey{Fingerprint: k}
}
