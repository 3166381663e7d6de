package cloud

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"

	"github.com/digitalocean/godo"
)

// CheckProfile checks a profile against the account's live catalog, before any enrolment token
// is minted or droplet made: the size must exist and be offered in the region, the region must be
// a region slug, a region prefix ("nyc": any of its datacenters) or empty (any region), and the
// image a slug or an integer id (custom images have no slug) available there. On DigitalOcean
// sizes differ per region; a profile that names a size the region does not offer would
// otherwise 422 only after its tokens were issued.
func (c *Client) CheckProfile(ctx context.Context, p *Profile) error {
	_, err := c.resolveProfile(ctx, p)
	return err
}

// resolveProfile checks a profile as CheckProfile does and returns the region to send with its
// creates: the profile's own, or, when it is a prefix or empty and the image is not everywhere
// the size is, the first region that has both (DigitalOcean would otherwise be free to pick a
// datacenter without the image).
func (c *Client) resolveProfile(ctx context.Context, p *Profile) (string, error) {
	var regions []godo.Region
	if err := pages(ctx, func(opt *godo.ListOptions) (int, *godo.Response, error) {
		page, resp, err := c.do.Regions.List(ctx, opt)
		regions = append(regions, page...)
		return len(page), resp, err
	}); err != nil {
		return "", fmt.Errorf("profile %s: list regions: %w", p.Name, err)
	}
	var sizes []godo.Size
	if err := pages(ctx, func(opt *godo.ListOptions) (int, *godo.Response, error) {
		page, resp, err := c.do.Sizes.List(ctx, opt)
		sizes = append(sizes, page...)
		return len(page), resp, err
	}); err != nil {
		return "", fmt.Errorf("profile %s: list sizes: %w", p.Name, err)
	}

	// The regions the profile's region may mean, of those that take new droplets.
	var cands []string
	known := false
	for _, r := range regions {
		match := p.Region == "" || r.Slug == p.Region || (isRegionPrefix(p.Region) && strings.HasPrefix(r.Slug, p.Region))
		if match {
			known = true
			if r.Available {
				cands = append(cands, r.Slug)
			}
		}
	}
	if !known {
		return "", fmt.Errorf("profile %s: region %q is not a DigitalOcean region or region prefix (regions: %s)", p.Name, p.Region, availableRegions(regions))
	}
	if len(cands) == 0 {
		return "", fmt.Errorf("profile %s: region %q takes no new droplets (regions: %s)", p.Name, p.Region, availableRegions(regions))
	}
	i := slices.IndexFunc(sizes, func(s godo.Size) bool { return s.Slug == p.Size })
	if i < 0 || !sizes[i].Available {
		return "", fmt.Errorf("profile %s: size %q is not offered by DigitalOcean", p.Name, p.Size)
	}
	size := sizes[i]
	var offered []string
	for _, r := range cands {
		if slices.Contains(size.Regions, r) {
			offered = append(offered, r)
		}
	}
	if len(offered) == 0 {
		where := p.Region
		if where == "" {
			where = "any region"
		}
		var here []string
		for _, r := range regions {
			if slices.Contains(cands, r.Slug) {
				here = append(here, r.Sizes...)
			}
		}
		sort.Strings(here)
		return "", fmt.Errorf("profile %s: size %q is not offered in %s (it is in %s; %s offers %s)", p.Name, p.Size, where,
			strings.Join(size.Regions, ", "), where, strings.Join(slices.Compact(here), ", "))
	}

	var (
		img *godo.Image
		err error
	)
	ref := imageRef(p.Image)
	if ref.ID != 0 {
		img, _, err = c.do.Images.GetByID(ctx, ref.ID)
	} else {
		img, _, err = c.do.Images.GetBySlug(ctx, ref.Slug)
	}
	switch {
	case isStatus(err, http.StatusNotFound):
		return "", fmt.Errorf("profile %s: image %q does not exist (a slug such as ubuntu-24-04-x64, or a custom image's integer id)", p.Name, p.Image)
	case err != nil:
		return "", fmt.Errorf("profile %s: look up image %q: %w", p.Name, p.Image, err)
	}
	if len(img.Regions) > 0 && !slices.ContainsFunc(offered, func(r string) bool { return slices.Contains(img.Regions, r) }) {
		return "", fmt.Errorf("profile %s: image %q is not available where size %q is offered in %q (the image is in %s)",
			p.Name, p.Image, p.Size, p.Region, strings.Join(img.Regions, ", "))
	}
	var both []string
	for _, r := range offered {
		if len(img.Regions) == 0 || slices.Contains(img.Regions, r) {
			both = append(both, r)
		}
	}
	if p.Region != "" && slices.Contains(both, p.Region) || len(both) == len(offered) {
		return p.Region, nil
	}
	return both[0], nil
}

// isRegionPrefix reports whether a profile's region is a prefix such as "nyc" rather than a
// slug such as "nyc3".
func isRegionPrefix(r string) bool {
	if r == "" {
		return false
	}
	for _, ch := range r {
		if ch < 'a' || ch > 'z' {
			return false
		}
	}
	return true
}

func availableRegions(rs []godo.Region) string {
	var out []string
	for _, r := range rs {
		if r.Available {
			out = append(out, r.Slug)
		}
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

// maxListPages bounds every paginated listing: 500 pages of 200 is 100,000 items, far beyond an
// account's limits; an API that keeps saying "next" past it is not followed further.
const maxListPages = 500

var errTooManyPages = fmt.Errorf("the API answered more than %d pages; stopped following them", maxListPages)

// pages calls list for every page until the last, at most maxListPages.
func pages(ctx context.Context, list func(*godo.ListOptions) (int, *godo.Response, error)) error {
	opt := &godo.ListOptions{Page: 1, PerPage: 200}
	for {
		n, resp, err := list(opt)
		if err != nil {
			return err
		}
		if resp == nil || resp.Links == nil || resp.Links.IsLastPage() || n == 0 {
			return nil
		}
		opt.Page++
		if opt.Page > maxListPages {
			return errTooManyPages
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}
