package capture

import (
	"bytes"
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
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

// Split divides the captures of several hosts (minion id to bundle files) into a site tree:
// a bundle CommonBundle with every block (resource, variable, locals) that all hosts' captures
// hold identically (same text, same referenced files), one bundle per host, named by its id,
// with the rest (and its README), and a site.hcl whose assign blocks give every host the
// common bundle and its own. The result maps slash-separated paths of the tree to contents.
// With a single host there is no common bundle. The bundles of one host share one graph when
// converged (variables and locals too), so a block may stay in one and be used from the other.
func Split(hosts map[string]map[string][]byte) (map[string][]byte, error) {
	if len(hosts) == 0 {
		return nil, fmt.Errorf("split: no captures")
	}
	ids := make([]string, 0, len(hosts))
	for id := range hosts {
		if id == CommonBundle || id == "site.hcl" {
			return nil, fmt.Errorf("split: a minion named %q collides with the site's own names", id)
		}
		ids = append(ids, id)
	}
	sort.Strings(ids)
	units := map[string][]unit{}
	count := map[string]int{} // unit key -> hosts holding it
	for _, id := range ids {
		us, err := hostUnits(id, hosts[id])
		if err != nil {
			return nil, err
		}
		units[id] = us
		seen := map[string]bool{}
		for _, u := range us {
			if !seen[u.key] {
				seen[u.key] = true
				count[u.key]++
			}
		}
	}
	common := func(u unit) bool { return len(ids) > 1 && count[u.key] == len(ids) }

	out := map[string][]byte{}
	add := func(bundle string, u unit, files map[string][]byte) {
		p := bundle + "/" + u.file
		out[p] = append(out[p], u.text...)
		for _, r := range u.refs {
			out[bundle+"/"+r] = files[r]
		}
	}
	var hostBundles []string
	for i, id := range ids {
		files := hosts[id]
		used := map[string]bool{}
		hasHCL := false
		for _, u := range units[id] {
			for _, r := range u.refs {
				used[r] = true
			}
			if common(u) {
				if i == 0 {
					add(CommonBundle, u, files)
				}
				continue
			}
			add(id, u, files)
			hasHCL = true
		}
		// Files no block reads (the README) stay with the host.
		for p, data := range files {
			if !used[p] && !strings.HasSuffix(p, ".hcl") {
				out[id+"/"+p] = data
			}
		}
		if hasHCL {
			hostBundles = append(hostBundles, id)
		}
	}
	for p, data := range out {
		if strings.HasSuffix(p, ".hcl") {
			out[p] = append(bytes.TrimLeft(data, "\n"), '\n')
		}
	}

	var site strings.Builder
	site.WriteString("# Written by `brine capture`: every captured host gets the bundle of what all of them\n")
	site.WriteString("# share and the bundle of its own differences. Review both before converging.\n")
	if len(ids) > 1 {
		fmt.Fprintf(&site, "\nassign %q { bundles = [%q] }\n", strings.Join(ids, ","), CommonBundle)
		var readme strings.Builder
		fmt.Fprintf(&readme, "# What %s share\n\nThe blocks that the captures of these hosts hold identically: %s.\n"+
			"Each host's own bundle (a directory named by its minion id) holds the rest, and its README\nthe notes of its capture.\n",
			"the captured hosts", strings.Join(ids, ", "))
		out[CommonBundle+"/README.md"] = []byte(readme.String())
	}
	for _, id := range hostBundles {
		fmt.Fprintf(&site, "assign %q { bundles = [%q] }\n", id, id)
	}
	out["site.hcl"] = []byte(site.String())
	return out, nil
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
