package states

import (
	"fmt"
	"path"
	"slices"
	"sort"
	"strings"

	"github.com/brinecm/brine/internal/lazyre"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
)

// A site is a states tree: a site.hcl at its root and bundles in its subdirectories. A converge
// sends a minion the union of the bundles assigned to it as one merged bundle: each member's
// files under its directory name, plus a list of the members (mergedList). Each member keeps its
// own root for file(), templatefile() and file sources, so that paths in a bundle mean the same
// alone and merged; its resources, variables and locals share one graph with the other members'.

// SiteFile is the name of the site file at the root of a states tree.
const SiteFile = "site.hcl"

// mergedList names the members of a merged bundle, one per line. It starts with a dot, so
// ReadBundle never reads one from a directory: only MergeBundles makes it.
const mergedList = ".brine-bundles"

// bundleNameRE is what a bundle's directory name may be in a site: one path segment.
var bundleNameRE = lazyre.New(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)

// ValidBundleName reports whether name can name a bundle of a site (a directory at its root).
func ValidBundleName(name string) bool {
	return bundleNameRE.MatchString(name) && !strings.Contains(name, "..")
}

// SiteBundles returns the names of the bundles of a states tree: the directories at its root
// that hold at least one *.hcl file, sorted.
func SiteBundles(tree *Bundle) []string {
	seen := map[string]bool{}
	for n := range tree.Files {
		dir, rest, ok := strings.Cut(n, "/")
		if ok && path.Ext(rest) == ".hcl" && ValidBundleName(dir) {
			seen[dir] = true
		}
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// MergeBundles makes one bundle of the named bundles of a states tree: their files under their
// directory names, sorted by name. Diagnostics name the files as tree.Root/NAME/FILE.
func MergeBundles(tree *Bundle, names []string) (*Bundle, error) {
	names = slices.Clone(names)
	sort.Strings(names)
	names = slices.Compact(names)
	if len(names) == 0 {
		return nil, fmt.Errorf("no bundle to merge")
	}
	out := &Bundle{Files: map[string][]byte{}, Root: tree.Root, escaping: map[string]string{}}
	for _, name := range names {
		if !ValidBundleName(name) {
			return nil, fmt.Errorf("%q is not a bundle name (one directory of the site)", name)
		}
		prefix := name + "/"
		found := false
		for n, data := range tree.Files {
			if strings.HasPrefix(n, prefix) {
				out.Files[n] = data
				found = found || path.Ext(n) == ".hcl"
			}
		}
		for n, target := range tree.escaping {
			if strings.HasPrefix(n, prefix) {
				out.escaping[n] = target
			}
		}
		if !found {
			return nil, fmt.Errorf("no bundle %q in the site (a directory with *.hcl files)", name)
		}
	}
	out.Files[mergedList] = []byte(strings.Join(names, "\n") + "\n")
	return out, nil
}

// Members returns the names of the bundles merged into b, or nil for a plain bundle.
func (b *Bundle) Members() []string {
	raw, ok := b.Files[mergedList]
	if !ok {
		return nil
	}
	var out []string
	for _, n := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		if ValidBundleName(n) {
			out = append(out, n)
		}
	}
	return out
}

// member returns the view of member name of a merged bundle: its files without the prefix,
// rooted at Root/name.
func (b *Bundle) member(name string) *Bundle {
	prefix := name + "/"
	m := &Bundle{Files: map[string][]byte{}, escaping: map[string]string{}}
	if b.Root != "" {
		m.Root = path.Join(b.Root, name)
	} else {
		m.Root = name
	}
	for n, data := range b.Files {
		if rest, ok := strings.CutPrefix(n, prefix); ok {
			m.Files[rest] = data
		}
	}
	for n, target := range b.escaping {
		if rest, ok := strings.CutPrefix(n, prefix); ok {
			m.escaping[rest] = target
		}
	}
	return m
}

// scopes binds file(), templatefile() and file sources to the member bundle a block comes from.
// For a plain bundle it is the bundle itself everywhere.
type scopes struct {
	b       *Bundle
	members map[string]*Bundle
	funcs   map[string]map[string]function.Function
	sens    *sensitivity // the compile's record of sensitive values
}

func newScopes(b *Bundle, opts *Options, sens *sensitivity) *scopes {
	s := &scopes{b: b, sens: sens}
	names := b.Members()
	if len(names) == 0 {
		return s
	}
	s.members = map[string]*Bundle{}
	s.funcs = map[string]map[string]function.Function{}
	for _, n := range names {
		mb := b.member(n)
		s.members[n] = mb
		s.funcs[n] = fileFuncs(mb, opts, sens)
	}
	return s
}

// memberOf returns the member a source file (a diagnostic file name) belongs to, or "".
func (s *scopes) memberOf(filename string) string {
	rel := filename
	if s.b.Root != "" {
		var ok bool
		if rel, ok = strings.CutPrefix(filename, strings.TrimSuffix(s.b.Root, "/")+"/"); !ok {
			return ""
		}
	}
	name, _, _ := strings.Cut(rel, "/")
	if _, ok := s.members[name]; ok {
		return name
	}
	return ""
}

// bundle is the bundle that paths written at rng are relative to.
func (s *scopes) bundle(rng hcl.Range) *Bundle {
	if s.members == nil {
		return s.b
	}
	if n := s.memberOf(rng.Filename); n != "" {
		return s.members[n]
	}
	return s.b
}

// child returns a child of ctx whose file functions are those of the member of rng. For a member
// they sit in an intermediate context, so that the child's parent holds them as a resource's
// parent context holds the bundle's (the file type renders templates with its parent's).
func (s *scopes) child(ctx *hcl.EvalContext, rng hcl.Range) *hcl.EvalContext {
	if s.members != nil {
		if n := s.memberOf(rng.Filename); n != "" {
			ctx = ctx.NewChild()
			ctx.Functions = s.funcs[n]
		}
	}
	return ctx.NewChild()
}

// SiteGroup is a group "NAME" { target = "..." } block of a site file.
type SiteGroup struct {
	Name        string
	Target      string
	DefRange    hcl.Range
	TargetRange hcl.Range
}

// SiteAssign is an assign "TARGET" { bundles = [...] } block of a site file.
type SiteAssign struct {
	Target       string
	Bundles      []string
	TargetRange  hcl.Range
	BundlesRange hcl.Range
}

// SiteSpec is a parsed site file. Targets are not checked here (the master parses them).
type SiteSpec struct {
	Groups  []SiteGroup
	Assigns []SiteAssign
}

var (
	siteSchema = &hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{
		{Type: "group", LabelNames: []string{"name"}},
		{Type: "assign", LabelNames: []string{"target"}},
	}}
	siteGroupSchema  = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "target", Required: true}, {Name: "description"}}}
	siteAssignSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "bundles", Required: true}, {Name: "description"}}}
	siteGroupNameRE  = lazyre.New(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)
)

// Limits of a site file, which the master reads at every job.
const (
	MaxSiteFile    = 1 << 20
	MaxSiteBlocks  = 4096
	MaxSiteBundles = 256 // bundles of one assign block
)

// ParseSite parses a site file: group and assign blocks whose values are literal strings. The
// bundles named must be among known (the bundles of the tree), when known is not nil.
func ParseSite(src []byte, filename string, known []string) (*SiteSpec, hcl.Diagnostics) {
	if len(src) > MaxSiteFile {
		return nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Site file too large",
			Detail: fmt.Sprintf("%s is %d bytes; a site file holds at most %d.", filename, len(src), MaxSiteFile)}}
	}
	f, diags := hclsyntax.ParseConfig(src, filename, hcl.Pos{Line: 1, Column: 1})
	if diags.HasErrors() {
		return nil, diags
	}
	content, d := f.Body.Content(siteSchema)
	diags = append(diags, d...)
	if len(content.Blocks) > MaxSiteBlocks {
		return nil, append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Too many blocks in the site file",
			Detail: fmt.Sprintf("%s has %d blocks; at most %d.", filename, len(content.Blocks), MaxSiteBlocks)})
	}
	spec := &SiteSpec{}
	groups := map[string]hcl.Range{}
	str := func(a *hcl.Attribute) (string, bool) {
		v, d := constValue(a.Expr)
		diags = append(diags, d...)
		if d.HasErrors() {
			return "", false
		}
		if v.IsNull() || v.Type() != cty.String {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid " + a.Name,
				Detail: a.Name + " is a string.", Subject: a.Expr.Range().Ptr()})
			return "", false
		}
		return v.AsString(), true
	}
	for _, blk := range content.Blocks {
		switch blk.Type {
		case "group":
			name := blk.Labels[0]
			if !siteGroupNameRE.MatchString(name) {
				diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid group name",
					Detail: fmt.Sprintf("%q is not a group name: letters, digits, '_', '.' and '-', starting with a letter or digit.", name), Subject: blk.LabelRanges[0].Ptr()})
				continue
			}
			if prev, dup := groups[name]; dup {
				diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Duplicate group",
					Detail: fmt.Sprintf("Group %q is also declared at %s; each group is declared once.", name, prev), Subject: blk.DefRange.Ptr()})
				continue
			}
			groups[name] = blk.DefRange
			attrs, d := blk.Body.Content(siteGroupSchema)
			diags = append(diags, d...)
			a, ok := attrs.Attributes["target"]
			if !ok {
				continue
			}
			t, ok := str(a)
			if !ok {
				continue
			}
			spec.Groups = append(spec.Groups, SiteGroup{Name: name, Target: t, DefRange: blk.DefRange, TargetRange: a.Expr.Range()})
		case "assign":
			attrs, d := blk.Body.Content(siteAssignSchema)
			diags = append(diags, d...)
			a, ok := attrs.Attributes["bundles"]
			if !ok {
				continue
			}
			v, d := constValue(a.Expr)
			diags = append(diags, d...)
			if d.HasErrors() {
				continue
			}
			as := SiteAssign{Target: blk.Labels[0], TargetRange: blk.LabelRanges[0], BundlesRange: a.Expr.Range()}
			ty := v.Type()
			if v.IsNull() || !(ty.IsListType() || ty.IsTupleType() || ty.IsSetType()) || v.LengthInt() == 0 || v.LengthInt() > MaxSiteBundles {
				diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid bundles",
					Detail: fmt.Sprintf("bundles is a list of 1 to %d bundle names (directories of the site), like [\"base\", \"app\"].", MaxSiteBundles), Subject: a.Expr.Range().Ptr()})
				continue
			}
			bad := false
			for it := v.ElementIterator(); it.Next(); {
				_, e := it.Element()
				if e.IsNull() || e.Type() != cty.String {
					bad = true
					break
				}
				n := e.AsString()
				switch {
				case !ValidBundleName(n):
					diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid bundle name",
						Detail: fmt.Sprintf("%q is not a bundle name: a bundle is a directory at the root of the site.", n), Subject: a.Expr.Range().Ptr()})
				case known != nil && !slices.Contains(known, n):
					diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Unknown bundle",
						Detail:  fmt.Sprintf("The site has no bundle %q (a directory with *.hcl files next to %s).%s", n, path.Base(filename), DidYouMean(n, known)),
						Subject: a.Expr.Range().Ptr()})
				default:
					as.Bundles = append(as.Bundles, n)
				}
			}
			if bad {
				diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid bundles",
					Detail: "bundles is a list of strings, the names of bundles.", Subject: a.Expr.Range().Ptr()})
				continue
			}
			spec.Assigns = append(spec.Assigns, as)
		}
	}
	return spec, diags
}

// SiteFileName is how the site file of tree is named in diagnostics.
func SiteFileName(tree *Bundle) string { return tree.displayName(SiteFile) }

// merge adds m, another block of n's address, to n (Type.Merge).
func (n *node) merge(m *node) hcl.Diagnostics {
	if n.onlyIf != nil || m.onlyIf != nil {
		blk := m.block
		if n.onlyIf != nil {
			blk = n.block
		}
		return hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "only_if on a merged block",
			Detail: fmt.Sprintf("%s is declared at %s and %s; its blocks merge into one resource, so none of them takes only_if.",
				n.addr, n.block.DefRange, m.block.DefRange), Subject: blk.DefRange.Ptr()}}
	}
	n.merged = append(n.merged, m)
	n.deps = append(n.deps, m.deps...)
	n.notifies = append(n.notifies, m.notifies...)
	return nil
}

// mergeNode decodes the other blocks of n, each with the file functions of its own bundle, and
// merges them into n.res.
func mergeNode(n *node, ctx *hcl.EvalContext, sc *scopes) hcl.Diagnostics {
	var diags hcl.Diagnostics
	rs := []Resource{n.res}
	blocks := []*hcl.Block{n.block}
	for _, m := range n.merged {
		d := decodeNode(m, sc.child(ctx, m.block.DefRange), sc.bundle(m.block.DefRange), sc.sens)
		diags = append(diags, d...)
		rs = append(rs, m.res)
		blocks = append(blocks, m.block)
	}
	if diags.HasErrors() || slices.Contains(rs, nil) {
		return diags
	}
	res, d := n.typ.Merge(rs, blocks)
	n.res = res
	return append(diags, d...)
}

// VarsFor returns the values of vars that b declares: a converge's --var values go to the sets
// of bundles that declare them.
func VarsFor(m *Module, vars map[string]string) map[string]string {
	if len(vars) == 0 {
		return vars
	}
	out := map[string]string{}
	for _, n := range m.Variables {
		if v, ok := vars[n]; ok {
			out[n] = v
		}
	}
	return out
}
