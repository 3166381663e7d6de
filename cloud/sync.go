package cloud

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/digitalocean/godo"
)

// SyncRequest makes the account match a map.
type SyncRequest struct {
	Config *Config
	Map    string
	// Prune destroys droplets that carry the map's tag but are no longer in the map.
	Prune bool
	// DryRun reports the plan and changes nothing.
	DryRun bool
	Master Master
	// OnEvent receives the progress of the creates; see CreateRequest.
	OnEvent func(Event)
	// Create carries the timeouts and parallelism of the creates; its Profile, Names,
	// Master, ExtraTags, DryRun and OnEvent are set by Sync.
	Create CreateRequest
}

// SyncPlan is what sync does (or would do).
type SyncPlan struct {
	Map string `json:"map"`
	// Create lists the missing droplets, with the profile each is made with.
	Create []Wanted `json:"create"`
	// Keep lists the map's droplets that exist.
	Keep []Droplet `json:"keep"`
	// Dying lists droplets of the map's names that are being destroyed: their delete was
	// accepted but DigitalOcean still lists them. They are not kept; their names are in Create
	// and are made again once the old droplet is gone.
	Dying []Droplet `json:"dying"`
	// Extra lists droplets with the map's tag that the map no longer names; they are destroyed
	// only with Prune.
	Extra []Droplet `json:"extra"`
	Prune bool      `json:"prune"`
}

// SyncResult is the plan and what came of it.
type SyncResult struct {
	DryRun    bool            `json:"dry_run"`
	Plan      SyncPlan        `json:"plan"`
	Created   []*CreateResult `json:"created"`
	Destroyed *DestroyResult  `json:"destroyed,omitempty"`
}

// Sync plans the difference between a map and the account, creates what is missing and, with
// Prune, destroys the extras. Sync is idempotent: after a partial failure, running it again
// creates only what is still missing. It refuses when a wanted name belongs to a droplet that
// brine did not make.
func (c *Client) Sync(ctx context.Context, req SyncRequest) (*SyncResult, error) {
	if req.Config == nil {
		return nil, errors.New("sync: no configuration")
	}
	m, err := req.Config.Map(req.Map)
	if err != nil {
		return nil, fmt.Errorf("sync: %w", err)
	}
	all, err := c.listAll(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("sync: %w", err)
	}
	res := &SyncResult{DryRun: req.DryRun, Plan: SyncPlan{Map: m.Name, Prune: req.Prune,
		Create: []Wanted{}, Keep: []Droplet{}, Dying: []Droplet{}, Extra: []Droplet{}}, Created: []*CreateResult{}}
	// A droplet whose delete was accepted is still listed until DigitalOcean removes it; it is
	// not one to keep. One request tells them apart: the account's destroy actions.
	dying := map[int]bool{}
	if len(all) > 0 {
		if dying, err = c.dying(ctx); err != nil {
			return nil, fmt.Errorf("sync: %w", err)
		}
	}
	wanted := map[string]bool{}
	var conflicts []string
	for _, w := range m.Want() {
		wanted[w.Name] = true
		i := slices.IndexFunc(all, func(d godo.Droplet) bool { return strings.EqualFold(d.Name, w.Name) && !dying[d.ID] })
		if i < 0 {
			for _, d := range all {
				if strings.EqualFold(d.Name, w.Name) {
					res.Plan.Dying = append(res.Plan.Dying, fromGodo(d))
				}
			}
			res.Plan.Create = append(res.Plan.Create, w)
			continue
		}
		d := fromGodo(all[i])
		if !d.Managed {
			conflicts = append(conflicts, fmt.Sprintf("%s (id %d) exists without the %q tag", d.Name, d.ID, ManagedTag))
			continue
		}
		res.Plan.Keep = append(res.Plan.Keep, d)
	}
	for _, gd := range all {
		d := fromGodo(gd)
		if hasTag(d.Tags, m.Tag()) && !wanted[d.Name] && !dying[d.ID] {
			res.Plan.Extra = append(res.Plan.Extra, d)
		}
	}
	if len(conflicts) > 0 {
		return res, fmt.Errorf("sync %s: names taken by droplets brine did not make: %s", m.Name, strings.Join(conflicts, "; "))
	}
	// Every profile to create with must fit the live catalog before anything is made.
	checked := map[string]bool{}
	for _, w := range res.Plan.Create {
		if checked[w.Profile] {
			continue
		}
		checked[w.Profile] = true
		p, err := req.Config.Profile(w.Profile)
		if err == nil {
			err = c.CheckProfile(ctx, p)
		}
		if err != nil {
			return res, fmt.Errorf("sync %s: nothing changed: %w", m.Name, err)
		}
	}
	if req.DryRun {
		return res, nil
	}

	// Create per profile, in the map's order.
	var order []string
	byProfile := map[string][]string{}
	for _, w := range res.Plan.Create {
		if _, ok := byProfile[w.Profile]; !ok {
			order = append(order, w.Profile)
		}
		byProfile[w.Profile] = append(byProfile[w.Profile], w.Name)
	}
	var errs []error
	for _, pn := range order {
		p, err := req.Config.Profile(pn)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		cr := req.Create
		cr.Profile, cr.Names, cr.Master, cr.OnEvent, cr.DryRun = p, byProfile[pn], req.Master, req.OnEvent, false
		cr.ExtraTags = append(slices.Clone(cr.ExtraTags), m.Tag())
		r, err := c.Create(ctx, cr)
		res.Created = append(res.Created, r)
		if err != nil {
			errs = append(errs, fmt.Errorf("profile %s: %w", pn, err))
		}
		if ctx.Err() != nil {
			break
		}
	}
	if req.Prune && len(res.Plan.Extra) > 0 && ctx.Err() == nil {
		d, err := c.deleteDroplets(ctx, res.Plan.Extra, req.Create.DeleteWait)
		res.Destroyed = d
		if err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return res, fmt.Errorf("sync %s: %w (run sync again to resume)", m.Name, errors.Join(errs...))
	}
	return res, nil
}
