package master

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/brinecm/brine/control"
	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/states"
)

// Site is a states tree as the master uses it: the groups its site file declares (groups as
// code, added to the groups of each minion's key) and which bundles each target is assigned.
// Site groups are evaluated by the master when it resolves a target and when it signs a job; a
// site group whose target uses fact: is made of claims (DESIGN.md invariant 20), so it never
// scopes a secret (secrets see key groups only).
type Site struct {
	// Tree is the whole tree, nil when only the site file was read (to resolve targets).
	Tree    *states.Bundle
	groups  []siteGroup
	assigns []siteAssign
}

type siteGroup struct {
	name   string
	target Target
}

type siteAssign struct {
	target  Target
	bundles []string
}

// LoadSite reads a states tree (states.ReadBundle of the site directory, or its site file alone
// in a bundle of one file): its site.hcl is parsed and every target in it checked. With a whole
// tree, every bundle an assign names must be a directory of the tree.
func LoadSite(tree *states.Bundle, whole bool) (*Site, hcl.Diagnostics) {
	src, ok := tree.Files[states.SiteFile]
	if !ok {
		return nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "No site file",
			Detail: fmt.Sprintf("%s does not exist. A site is a directory holding a %s and its bundles (directories).", states.SiteFileName(tree), states.SiteFile)}}
	}
	var known []string
	if whole {
		known = states.SiteBundles(tree)
		if known == nil {
			known = []string{}
		}
	}
	spec, diags := states.ParseSite(src, states.SiteFileName(tree), known)
	if spec == nil {
		return nil, diags
	}
	s := &Site{}
	if whole {
		s.Tree = tree
	}
	bad := func(rng hcl.Range, summary, detail string) {
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: detail, Subject: rng.Ptr()})
	}
	var names []string
	for _, g := range spec.Groups {
		names = append(names, g.Name)
	}
	for i, g := range spec.Groups {
		t, err := ParseTarget(g.Target)
		if err != nil {
			bad(g.TargetRange, "Invalid group target", err.Error()+".")
			continue
		}
		// A group's target sees key groups and the site groups declared above it: no cycles.
		for _, ref := range targetGroups(t) {
			for _, later := range names[i:] {
				if ok, _ := path.Match(ref, later); ok {
					bad(g.TargetRange, "Group refers to a later group",
						fmt.Sprintf("group %q uses group:%s, which names site group %q declared at or after it. A group's target sees key groups and the site groups declared above it; move %q up.", g.Name, ref, later, later))
				}
			}
		}
		s.groups = append(s.groups, siteGroup{name: g.Name, target: t})
	}
	for _, a := range spec.Assigns {
		t, err := ParseTarget(a.Target)
		if err != nil {
			bad(a.TargetRange, "Invalid assign target", err.Error()+".")
			continue
		}
		s.assigns = append(s.assigns, siteAssign{target: t, bundles: a.Bundles})
	}
	return s, diags
}

// targetGroups returns the group globs a target names.
func targetGroups(t Target) []string {
	switch x := t.(type) {
	case groupT:
		return []string{string(x)}
	case binary:
		return append(targetGroups(x.l), targetGroups(x.r)...)
	case notT:
		return targetGroups(x.t)
	}
	return nil
}

// GroupsOf returns mi's groups: its key groups, then the site groups it is a member of.
func (s *Site) GroupsOf(mi MinionInfo) []string {
	out := slices.Clone(mi.Groups)
	if s == nil {
		return out
	}
	for _, g := range s.groups {
		if slices.Contains(out, g.name) {
			continue
		}
		if safeMatch(g.target, MinionInfo{ID: mi.ID, Groups: out, Facts: mi.Facts}) {
			out = append(out, g.name)
		}
	}
	return out
}

// extend returns the minions with their site groups added, and among them those the minion is
// in only through its facts (MinionInfo.Claimed): the groups it would not be in if it
// reported none.
func (s *Site) extend(all []MinionInfo) []MinionInfo {
	if s == nil {
		return all
	}
	out := make([]MinionInfo, len(all))
	for i, mi := range all {
		gs := s.GroupsOf(mi)
		var claimed []string
		if len(gs) > len(mi.Groups) {
			// Without the claims, that is: id and groups stay, the master sets them (setFacts).
			bare := s.GroupsOf(MinionInfo{ID: mi.ID, Groups: mi.Groups, Facts: map[string]any{"id": mi.ID, "groups": mi.Facts["groups"]}})
			for _, g := range gs {
				if !slices.Contains(bare, g) {
					claimed = append(claimed, g)
				}
			}
		}
		out[i] = MinionInfo{ID: mi.ID, Groups: gs, Facts: mi.Facts, Claimed: claimed}
	}
	return out
}

// BundlesOf returns the sorted union of the bundles assigned to mi (whose groups include its
// site groups).
func (s *Site) BundlesOf(mi MinionInfo) []string {
	var out []string
	for _, a := range s.assigns {
		if safeMatch(a.target, mi) {
			out = append(out, a.bundles...)
		}
	}
	sort.Strings(out)
	return slices.Compact(out)
}

// siteFor returns the site a request works with: the tree it carries, else the master's
// configured site directory (read now, so that an edit counts from the next command), else nil.
// whole says whether the bundles are needed or only the groups.
func (m *Master) siteFor(packed []byte, display string, whole bool) (*Site, *states.Bundle, hcl.Diagnostics, error) {
	var tree *states.Bundle
	switch {
	case len(packed) > 0:
		b, err := states.UnmarshalBundle(packed)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("site: %w", err)
		}
		b.Root = display
		tree = b
	case m.cfg.Site == "":
		return nil, nil, nil, nil
	case whole:
		b, err := states.ReadBundle(m.cfg.Site)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("site %s (master.hcl): %w", m.cfg.Site, err)
		}
		tree = b
	default:
		src, err := readLimited(filepath.Join(m.cfg.Site, states.SiteFile), states.MaxSiteFile)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("site %s (master.hcl): %w", m.cfg.Site, err)
		}
		tree = &states.Bundle{Files: map[string][]byte{states.SiteFile: src}, Root: m.cfg.Site}
	}
	site, diags := LoadSite(tree, whole)
	return site, tree, diags, nil
}

func readLimited(p string, max int64) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("%s is larger than %d bytes", p, max)
	}
	return data, nil
}

// siteError renders a site's diagnostics into an error.
func siteError(tree *states.Bundle, diags hcl.Diagnostics) error {
	var buf bytes.Buffer
	states.WriteDiagnostics(&buf, tree, diags, false)
	return fmt.Errorf("the site is invalid; nothing was sent\n%s", strings.TrimRight(buf.String(), "\n"))
}

// ResolveTargetIn is ResolveTarget with the groups of site (nil: key groups only).
func (m *Master) ResolveTargetIn(target string, site *Site) ([]string, error) {
	t, err := ParseTarget(target)
	if err != nil {
		return nil, err
	}
	if err := m.storeLost(); err != nil {
		return nil, err // the keys it would resolve against are in the database it lost
	}
	return Resolve(t, site.extend(m.Minions())), nil
}

// ConvergeSpec is a converge (highstate): every minion of Target gets the bundles its site
// assigns it.
type ConvergeSpec struct {
	Target string
	// Minions, when not nil, are the minions converged (a schedule's, of Target); nil: Target's.
	Minions  []string
	Site     *Site // with its Tree
	DryRun   bool
	Timeout  time.Duration
	Vars     map[string]string
	VarFiles map[string][]byte
}

// Converge sends each minion of the target the union of the bundles the site assigns it, as one
// job per distinct set of bundles, batch by batch as ro says. Every merged bundle is checked
// and compiled (for one of its minions) before anything is sent: one broken bundle, a duplicate
// address across bundles or a ufw conflict stops the whole converge with an "invalid" event.
// Targeted minions with no bundle assigned are reported in an "unassigned" event and left out.
func (m *Master) Converge(ctx context.Context, cs ConvergeSpec, ro Rollout, emit func(Event)) (*RolloutResult, error) {
	if emit == nil {
		emit = func(Event) {}
	}
	if cs.Site == nil || cs.Site.Tree == nil {
		return nil, errors.New("converge: no site (give --site DIR, or set site in master.hcl)")
	}
	if cs.Target == "" {
		cs.Target = "*"
	}
	ids, err := m.ResolveTargetIn(cs.Target, cs.Site)
	if err != nil {
		return nil, err
	}
	if cs.Minions != nil {
		ids = cs.Minions
	}
	if len(ids) == 0 {
		return nil, ErrNoMinions
	}
	infos := map[string]MinionInfo{}
	for _, mi := range cs.Site.extend(m.Minions()) {
		infos[mi.ID] = mi
	}
	setOf := map[string]string{}      // minion -> set key
	members := map[string][]string{}  // set key -> minions
	bundles := map[string][]string{}  // set key -> bundle names
	var targeted, unassigned []string // in target order
	for _, id := range ids {
		names := cs.Site.BundlesOf(infos[id])
		if len(names) == 0 {
			unassigned = append(unassigned, id)
			continue
		}
		key := strings.Join(names, ",")
		setOf[id] = key
		members[key] = append(members[key], id)
		bundles[key] = names
		targeted = append(targeted, id)
	}
	if len(unassigned) > 0 {
		emit(Event{Event: "unassigned", Minions: unassigned})
	}
	if len(targeted) == 0 {
		return nil, fmt.Errorf("no bundle is assigned to any of the %d targeted minion(s); nothing was sent", len(ids))
	}
	// Build and check every set before anything is sent.
	keys := make([]string, 0, len(bundles))
	for k := range bundles {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	specs := map[string]JobSpec{} // by set: its merged bundle, loaded and packed once
	var bad hcl.Diagnostics
	var badBundle *states.Bundle
	for _, k := range keys {
		b, err := states.MergeBundles(cs.Site.Tree, bundles[k])
		if err != nil {
			return nil, fmt.Errorf("bundles %s: %w", k, err)
		}
		spec := JobSpec{Kind: wire.JobApply, History: historyConverge, BundleName: k, Target: cs.Target,
			Bundle: b, DryRun: cs.DryRun, Timeout: cs.Timeout, VarFiles: cs.VarFiles, Site: cs.Site, validated: true}
		diags := spec.load()
		if !diags.HasErrors() {
			spec.Vars = states.VarsFor(spec.loaded.mod, cs.Vars)
			peers, err := m.peersFor(spec.loaded.mod.PeerTargets, cs.Site)
			if err != nil {
				return nil, err
			}
			// A duplicate address, a ufw conflict or any other error of the merged bundle.
			vspec := spec
			vspec.Minions = members[k]
			diags = m.validate(ctx, vspec, peers)
		}
		if diags.HasErrors() {
			bad = append(bad, diags...)
			if badBundle == nil {
				badBundle = b
			} else {
				for n, data := range b.Files {
					badBundle.Files[n] = data // sources for the diagnostics of every set
				}
			}
		}
		specs[k] = spec
	}
	if bad.HasErrors() {
		return nil, m.invalid(badBundle, uniqueDiags(bad), emit)
	}
	return m.rollout(ctx, targeted, cs.Site, ro, emit, func(ctx context.Context, batch []string, emit func(Event)) (*Result, error) {
		bySet := map[string][]string{}
		for _, id := range batch {
			bySet[setOf[id]] = append(bySet[setOf[id]], id)
		}
		var (
			mu   sync.Mutex
			wg   sync.WaitGroup
			res  = &Result{Returns: map[string]wire.Return{}}
			errs []error
		)
		for k, ids := range bySet {
			wg.Add(1)
			go func() {
				defer wg.Done()
				spec := specs[k]
				spec.Minions = ids
				r, err := m.Run(ctx, spec, emit)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, fmt.Errorf("bundles %s: %w", k, err))
				}
				if r != nil {
					res.JIDs = append(res.JIDs, r.JIDs...)
					for id, ret := range r.Returns {
						res.Returns[id] = ret
					}
					res.Missing = append(res.Missing, r.Missing...)
				}
			}()
		}
		wg.Wait()
		sort.Strings(res.JIDs)
		sort.Strings(res.Missing)
		return res, errors.Join(errs...)
	})
}

// uniqueDiags drops diagnostics repeated by several sets that share a bundle.
func uniqueDiags(diags hcl.Diagnostics) hcl.Diagnostics {
	seen := map[string]bool{}
	var out hcl.Diagnostics
	for _, d := range diags {
		k := d.Error()
		if !seen[k] {
			seen[k] = true
			out = append(out, d)
		}
	}
	return out
}

// ctlConverge serves the control op converge (`brine converge`; cloud provisioning's apply of
// one bundle to one new minion is the op provision, cloud.go).
func (m *Master) ctlConverge(ctx context.Context, req control.ConvergeRequest, emit func(Event)) (control.None, error) {
	site, tree, diags, err := m.siteFor(req.Site, req.Dir, true)
	if err != nil {
		return none, err
	}
	if site == nil && !diags.HasErrors() {
		return none, errors.New("converge: no site; give --site DIR or set site in master.hcl")
	}
	if diags.HasErrors() {
		var buf bytes.Buffer
		states.WriteDiagnostics(&buf, tree, diags, false)
		emit(Event{Event: "invalid", Diagnostics: buf.String(), Error: "the site is invalid; nothing was sent"})
		return none, errors.New("the site is invalid; nothing was sent")
	}
	chk := m.checkTarget(cmp.Or(req.Target, "*"), site)
	if ids, err := m.ResolveTargetIn(cmp.Or(req.Target, "*"), site); err == nil && len(ids) == 0 {
		return none, noMinionsError(chk)
	}
	emitTargetCheck(chk, emit)
	_, err = m.Converge(ctx, ConvergeSpec{Target: req.Target, Site: site, DryRun: req.DryRun, Timeout: req.Timeout,
		Vars: req.Vars, VarFiles: req.VarFiles}, req.Rollout, emit)
	return none, err
}
