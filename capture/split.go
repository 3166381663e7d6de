package capture

import (
	"bytes"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"

	"github.com/brinecm/brine/states"
)

// CommonBundle is the name of the bundle Split writes the resources shared by every host into.
const CommonBundle = "common"

// unit is one top-level block of a captured .hcl file, with the comments above it, and the
// bundle files its source or template names.
type unit struct {
	file string   // the .hcl file it is in
	text []byte   // the block and the comments and blank lines before it
	refs []string // bundle files it reads (source, template)
	key  string   // identity across hosts: file, text and the referenced files' bytes
}

// GroupBundlePrefix starts the name of a bundle Split writes a group's shared blocks into.
const GroupBundlePrefix = "group-"

// Split divides the captures of several hosts (minion id to bundle files) into a site tree:
//   - CommonBundle: every block (resource, variable, locals, with the comments above it) that
//     all hosts' captures hold identically (same text, same files its source or template reads);
//   - GroupBundlePrefix+G, for a group G of groups (minion id to its groups: key groups and the
//     site's groups, as the master resolves them) that two captured hosts or more have: the
//     blocks all of G's captured hosts hold identically and not all hosts do (a block goes to
//     the first such group by name, so no host gets it twice);
//   - one bundle per host, named by its id, with the rest and its README;
//   - site.hcl, whose assign blocks give each host the common bundle, its groups' and its own
//     (by id: the site reproduces the captured hosts, whoever joins the group later).
//
// site, when not nil, is an existing states tree (slash-separated paths to contents, its
// site.hcl among them) the capture is added to: its files are in the result unchanged but for
// site.hcl, which keeps its text (groups, assigns) and gets the captured bundles' assigns after
// it. A captured bundle whose name the site already uses is an error.
//
// The result maps slash-separated paths of the tree to contents. With a single host there is no
// common bundle. The bundles of one host share one graph when converged (variables and locals
// too), so a block may stay in one bundle and be used from another.
func Split(hosts map[string]map[string][]byte, groups map[string][]string, site map[string][]byte) (map[string][]byte, error) {
	if len(hosts) == 0 {
		return nil, fmt.Errorf("split: no captures")
	}
	ids := make([]string, 0, len(hosts))
	for id := range hosts {
		if id == CommonBundle || id == states.SiteFile || strings.HasPrefix(id, GroupBundlePrefix) {
			return nil, fmt.Errorf("split: a minion named %q collides with the site's own names (%s, %s*)", id, CommonBundle, GroupBundlePrefix)
		}
		if err := CheckBundle(hosts[id]); err != nil {
			return nil, fmt.Errorf("split: the capture of %s: %w", id, err)
		}
		ids = append(ids, id)
	}
	sort.Strings(ids)
	units := map[string][]unit{}
	holders := map[string]map[string]bool{} // unit key -> hosts holding it
	for _, id := range ids {
		us, err := hostUnits(id, hosts[id])
		if err != nil {
			return nil, err
		}
		units[id] = us
		for _, u := range us {
			if holders[u.key] == nil {
				holders[u.key] = map[string]bool{}
			}
			holders[u.key][id] = true
		}
	}
	// The captured members of each group that has two or more, groups by name.
	members := map[string][]string{}
	for _, id := range ids {
		for _, g := range groups[id] {
			if !slices.Contains(members[g], id) {
				members[g] = append(members[g], id)
			}
		}
	}
	var gnames []string
	for g, m := range members {
		if len(m) >= 2 && len(m) < len(ids) {
			gnames = append(gnames, g)
		}
	}
	sort.Strings(gnames)
	// home is the bundle each unit key goes to when it is not the host's own.
	home := map[string]string{}
	for k, hs := range holders {
		if len(ids) > 1 && len(hs) == len(ids) {
			home[k] = CommonBundle
			continue
		}
		for _, g := range gnames {
			all := true
			for _, id := range members[g] {
				all = all && hs[id]
			}
			if all {
				home[k] = GroupBundlePrefix + g
				break
			}
		}
	}
	gets := func(id, bundle string) bool {
		if bundle == CommonBundle {
			return true
		}
		return slices.Contains(members[strings.TrimPrefix(bundle, GroupBundlePrefix)], id)
	}

	out := map[string][]byte{}
	written := map[string]bool{} // unit keys written to a shared bundle
	add := func(bundle string, u unit, files map[string][]byte) {
		p := bundle + "/" + u.file
		out[p] = append(out[p], u.text...)
		for _, r := range u.refs {
			out[bundle+"/"+r] = files[r]
		}
	}
	assigned := map[string][]string{} // bundle -> hosts
	for _, id := range ids {
		files := hosts[id]
		used := map[string]bool{}
		for _, u := range units[id] {
			for _, r := range u.refs {
				used[r] = true
			}
			b := home[u.key]
			if b == "" || !gets(id, b) {
				b = id
			}
			if b == id || !written[u.key] {
				add(b, u, files)
			}
			if b != id {
				written[u.key] = true
			}
			if !slices.Contains(assigned[b], id) {
				assigned[b] = append(assigned[b], id)
			}
		}
		// Files no block reads (the README) stay with the host.
		for p, data := range files {
			if !used[p] && !strings.HasSuffix(p, ".hcl") {
				out[id+"/"+p] = data
			}
		}
	}
	for p, data := range out {
		if strings.HasSuffix(p, ".hcl") {
			out[p] = append(bytes.TrimLeft(data, "\n"), '\n')
		}
	}

	var text strings.Builder
	if old, ok := site[states.SiteFile]; ok {
		text.Write(bytes.TrimRight(old, "\n"))
		text.WriteString("\n\n# Added by `brine capture`: each captured host gets the bundle of what all of them share,\n")
	} else {
		text.WriteString("# Written by `brine capture`: each captured host gets the bundle of what all of them share,\n")
	}
	text.WriteString("# those of what the captured hosts of its groups share, and the bundle of its own differences.\n")
	text.WriteString("# Review them before converging.\n")
	var shared []string
	if _, ok := assigned[CommonBundle]; ok {
		shared = append(shared, CommonBundle)
	}
	for _, g := range gnames {
		if _, ok := assigned[GroupBundlePrefix+g]; ok {
			shared = append(shared, GroupBundlePrefix+g)
		}
	}
	for _, b := range shared {
		hs := assigned[b]
		sort.Strings(hs)
		fmt.Fprintf(&text, "\nassign %q { bundles = [%q] }\n", strings.Join(hs, ","), b)
		what := "all the captured hosts"
		if b != CommonBundle {
			what = "the captured hosts of group " + strings.TrimPrefix(b, GroupBundlePrefix)
		}
		out[b+"/README.md"] = []byte(fmt.Sprintf("# What %s share\n\nThe blocks that the captures of %s hold identically.\n"+
			"Each host's own bundle (a directory named by its minion id) holds the rest, and its README\nthe notes of its capture.\n",
			what, strings.Join(hs, ", ")))
	}
	text.WriteString("\n")
	for _, id := range ids {
		if slices.Contains(assigned[id], id) {
			fmt.Fprintf(&text, "assign %q { bundles = [%q] }\n", id, id)
		}
	}
	// The site's own files, after a check that no captured bundle takes a name it uses.
	used := map[string]bool{}
	for p := range site {
		used[strings.SplitN(p, "/", 2)[0]] = true
	}
	var taken []string
	for p := range out {
		if b := strings.SplitN(p, "/", 2)[0]; used[b] && !slices.Contains(taken, b) {
			taken = append(taken, b)
		}
	}
	if len(taken) > 0 {
		sort.Strings(taken)
		return nil, fmt.Errorf("split: the site already has %s, which the capture would write: capture into another directory (--out), or move them away", strings.Join(taken, ", "))
	}
	for p, data := range site {
		out[p] = data
	}
	out[states.SiteFile] = []byte(text.String())
	return out, nil
}

// MaxHCL bounds the bytes of the .hcl files of one host's capture as a minion returned it. The
// CLI parses them (Split), and HCL's lexer and parser allocate several hundred bytes per byte
// of source (1 MiB of one flat list: about 860 MiB): the whole of a capture's 6 MiB
// (wire.MaxCaptureFiles) as HCL would take gigabytes on the operator's host, which is often the
// master's. What capture emits for a host is a block per package, service, user and file, far
// below this; the files' contents are not HCL.
const MaxHCL = 1 << 20

// CheckBundle refuses a bundle (a host's capture, as a minion returned it) with a path that is
// not a plain path inside the bundle: absolute, empty, with a "." or ".." element, an empty
// element or a NUL; or with more than MaxHCL bytes of .hcl files. Split writes a host's files
// under the directory of its bundle, and a path like "../base/x.hcl" that stays inside the site
// would put what one minion sent into a bundle that the site gives other hosts.
func CheckBundle(files map[string][]byte) error {
	hcl := 0
	for p, data := range files {
		if !fs.ValidPath(p) || p == "." || strings.ContainsRune(p, 0) {
			return fmt.Errorf("path %.200q leaves its bundle or is not a plain relative path", p)
		}
		if strings.HasSuffix(p, ".hcl") {
			hcl += len(data)
		}
	}
	if hcl > MaxHCL {
		return fmt.Errorf("its .hcl files hold %d bytes; a capture's HCL may hold at most %d", hcl, MaxHCL)
	}
	return nil
}

// hostUnits cuts each .hcl file of one capture into its top-level blocks. A file with
// top-level attributes is one unit whole.
func hostUnits(id string, files map[string][]byte) ([]unit, error) {
	names := make([]string, 0, len(files))
	for p := range files {
		if strings.HasSuffix(p, ".hcl") {
			names = append(names, p)
		}
	}
	sort.Strings(names)
	var us []unit
	for _, name := range names {
		src := files[name]
		// A minion's text: parsed only once its depth is known to fit the parser's stack
		// (hclsyntax recurses per level, and 6 MiB of "[" overflows a 1 GB stack).
		if diags := states.CheckNesting(src, name); diags.HasErrors() {
			return nil, fmt.Errorf("split: the capture of %s: %s", id, diags.Error())
		}
		f, diags := hclsyntax.ParseConfig(src, name, hcl.InitialPos)
		if diags.HasErrors() {
			return nil, fmt.Errorf("split: the capture of %s: %s", id, diags.Error())
		}
		body := f.Body.(*hclsyntax.Body)
		if len(body.Attributes) > 0 {
			us = append(us, newUnit(name, src, nil, files))
			continue
		}
		start := 0
		for _, b := range body.Blocks {
			end := b.Range().End.Byte
			us = append(us, newUnit(name, src[start:end], b, files))
			start = end
		}
	}
	return us, nil
}

func newUnit(file string, text []byte, b *hclsyntax.Block, files map[string][]byte) unit {
	u := unit{file: file, text: text}
	if b != nil {
		for _, name := range []string{"source", "template"} {
			a, ok := b.Body.Attributes[name]
			if !ok {
				continue
			}
			v, diags := a.Expr.Value(nil)
			if diags.HasErrors() || !v.IsKnown() || v.IsNull() || v.Type() != cty.String {
				continue
			}
			p := path.Clean(v.AsString())
			if _, ok := files[p]; ok {
				u.refs = append(u.refs, p)
			}
		}
	}
	var k strings.Builder
	k.WriteString(file + "\x00" + strings.TrimSpace(string(text)))
	for _, r := range u.refs {
		fmt.Fprintf(&k, "\x00%s\x00%s", r, files[r])
	}
	u.key = k.String()
	return u
}
