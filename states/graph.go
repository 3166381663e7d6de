package states

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

type node struct {
	addr  string
	typ   *Type
	name  string
	block *hcl.Block
	body  hcl.Body // without meta-arguments
	decl  int      // declaration index, for a stable order
	sub   int      // index among the instances of one for_each block

	deps     []edge   // resources this one must come after
	notifies []string // addresses this one notifies when it changed
	onlyIf   hcl.Expression

	res    Resource
	merged []*node          // more blocks of a type whose blocks merge (Type.Merge), in declaration order
	sens   *nodeSensitivity // the arguments that received sensitive values
	guard  bool             // false: only_if said no
	reason string
	each   cty.Value // each.key and each.value of a for_each instance; cty.NilVal otherwise
}

// before orders nodes by declaration, and the instances of one for_each block by key.
func (n *node) before(m *node) bool {
	if n.decl != m.decl {
		return n.decl < m.decl
	}
	return n.sub < m.sub
}

type edge struct {
	to  string
	rng hcl.Range
	why string // "depends_on", "notify" or "reference"
}

var metaSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "depends_on"}, {Name: "notify"}, {Name: "only_if"}, {Name: "for_each"},
}}

// Address returns the address of a resource as users write it in references:
// type.name when the name is an identifier, type["name"] otherwise, and just type for singletons.
func Address(typ, name string, labels int) string {
	switch {
	case labels == 0:
		return typ
	case hclsyntax.ValidIdentifier(name):
		return typ + "." + name
	default:
		return typ + "[" + strconv.Quote(name) + "]"
	}
}

// collectNodes turns resource blocks into nodes and reads their meta-arguments. With ctx, a block
// with for_each becomes one node per element, named by the element (or map key); the block's
// own address then names the group, and depends_on/notify on it mean every instance (groups).
// Without ctx (Check, no minion) such a block stays one node under its own address.
func collectNodes(blocks []*hcl.Block, types *Registry, ctx *hcl.EvalContext) (map[string]*node, map[string][]string, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	nodes := map[string]*node{}
	groups := map[string][]string{}
	add := func(n *node) {
		if prev, dup := nodes[n.addr]; dup {
			if prev.typ.Merge != nil && prev.typ == n.typ {
				diags = append(diags, prev.merge(n)...)
				return
			}
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Duplicate resource",
				Detail:  fmt.Sprintf("%s is also declared at %s; each resource is declared once.", n.addr, prev.block.DefRange),
				Subject: n.block.DefRange.Ptr()})
			return
		}
		nodes[n.addr] = n
	}
	if len(blocks) > MaxResources {
		return nodes, groups, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Too many resources",
			Detail: fmt.Sprintf("The bundle declares %d blocks; a bundle compiles to at most %d resources on one host.", len(blocks), MaxResources)}}
	}
	for i, blk := range blocks {
		t := types.Lookup(blk.Type)
		if t == nil {
			continue // variable, locals
		}
		name := ""
		if t.Labels > 0 {
			name = blk.Labels[0]
		}
		n := &node{addr: Address(t.Name, name, t.Labels), typ: t, name: name, block: blk, decl: i, guard: true}
		content, remain, d := blk.Body.PartialContent(metaSchema)
		diags = append(diags, d...)
		n.body = remain
		for _, meta := range []string{"depends_on", "notify"} {
			a, ok := content.Attributes[meta]
			if !ok {
				continue
			}
			exprs, d := hcl.ExprList(a.Expr)
			diags = append(diags, d...)
			for _, e := range exprs {
				tr, d := hcl.AbsTraversalForExpr(e)
				if d.HasErrors() {
					diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid " + meta + " entry",
						Detail: "Each entry is a resource address like service.nginx or file[\"/etc/motd\"].", Subject: e.Range().Ptr()})
					continue
				}
				n.deps = append(n.deps, edge{to: traversalAddr(tr, types), rng: tr.SourceRange(), why: meta})
				if meta == "notify" {
					n.notifies = append(n.notifies, traversalAddr(tr, types))
				}
			}
		}
		if a, ok := content.Attributes["only_if"]; ok {
			n.onlyIf = a.Expr
		}
		// References to other resources inside any expression of the body.
		for _, tr := range bodyTraversals(blk.Body.(*hclsyntax.Body)) {
			root := tr.RootName()
			if types.Lookup(root) == nil {
				continue
			}
			n.deps = append(n.deps, edge{to: traversalAddr(tr, types), rng: tr.SourceRange(), why: "reference"})
		}
		fe, ok := content.Attributes["for_each"]
		if !ok || ctx == nil {
			add(n)
			continue
		}
		instances, d := forEach(t, types, fe, ctx)
		diags = append(diags, d...)
		if d.HasErrors() {
			continue
		}
		if len(nodes)+len(instances) > MaxResources {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Too many resources",
				Detail: fmt.Sprintf("This for_each makes %d instances; a bundle compiles to at most %d resources on one host.",
					len(instances), MaxResources),
				Subject: fe.Expr.Range().Ptr()})
			return nodes, groups, diags
		}
		var addrs []string
		for k, inst := range instances {
			m := *n
			m.sub = k
			m.name = inst.key
			m.addr = Address(t.Name, inst.key, 1)
			m.each = cty.ObjectVal(map[string]cty.Value{"key": cty.StringVal(inst.key), "value": inst.value})
			m.deps = append([]edge(nil), n.deps...)
			m.notifies = append([]string(nil), n.notifies...)
			add(&m)
			addrs = append(addrs, m.addr)
		}
		groups[n.addr] = addrs
	}
	return nodes, groups, diags
}

type instance struct {
	key   string
	value cty.Value
}

// forEach evaluates a for_each argument: a map (instances named by its keys) or a set or list of
// strings (named by the strings). It may use var, local, minion and functions, not resources.
func forEach(t *Type, types *Registry, a *hcl.Attribute, ctx *hcl.EvalContext) ([]instance, hcl.Diagnostics) {
	bad := func(detail string) hcl.Diagnostics {
		return hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Invalid for_each", Detail: detail, Subject: a.Expr.Range().Ptr()}}
	}
	if t.Labels == 0 {
		return nil, bad(fmt.Sprintf("%s is a single block per host; it takes no for_each.", t.Name))
	}
	for _, tr := range a.Expr.Variables() {
		if types.Lookup(tr.RootName()) != nil {
			return nil, bad("for_each is decided before any resource runs, so it cannot refer to resources; use var, local, minion or peers().")
		}
	}
	v, diags := a.Expr.Value(ctx)
	if diags.HasErrors() {
		return nil, diags
	}
	// Instance names become resource addresses, which every report shows: they cannot be
	// sensitive. The values of a map may be (each.value keeps its mark).
	if v.IsMarked() {
		return nil, bad("for_each is sensitive (it comes from secret() or a sensitive variable); instance names appear in every report, so they cannot be sensitive.")
	}
	if v.IsNull() || !v.IsWhollyKnown() {
		return nil, bad("for_each must be a known map, set or list of strings.")
	}
	var out []instance
	ty := v.Type()
	switch {
	case ty.IsMapType() || ty.IsObjectType():
		for it := v.ElementIterator(); it.Next(); {
			k, val := it.Element()
			out = append(out, instance{key: k.AsString(), value: val})
		}
	case ty.IsSetType() || ty.IsListType() || ty.IsTupleType():
		seen := map[string]bool{}
		for it := v.ElementIterator(); it.Next(); {
			_, val := it.Element()
			if val.ContainsMarked() {
				return nil, bad("for_each holds a sensitive value (from secret() or a sensitive variable); instance names appear in every report, so they cannot be sensitive.")
			}
			sv, err := convert.Convert(val, cty.String)
			if err != nil || sv.IsNull() {
				return nil, bad(fmt.Sprintf("for_each over a list or set needs strings (the names of the instances); got %s.", val.Type().FriendlyName()))
			}
			k := sv.AsString()
			if seen[k] {
				return nil, bad(fmt.Sprintf("%q appears twice in for_each; instance names must be unique.", k))
			}
			seen[k] = true
			out = append(out, instance{key: k, value: sv})
		}
	default:
		return nil, bad(fmt.Sprintf("for_each must be a map, set or list of strings, not %s.", ty.FriendlyName()))
	}
	return out, nil
}

// traversalAddr turns service.nginx or file["/etc/motd"] (and anything after it) into an address.
func traversalAddr(tr hcl.Traversal, types *Registry) string {
	root := tr.RootName()
	t := types.Lookup(root)
	if t != nil && t.Labels == 0 {
		return root
	}
	if len(tr) < 2 {
		return root + ".?"
	}
	switch step := tr[1].(type) {
	case hcl.TraverseAttr:
		return Address(root, step.Name, 1)
	case hcl.TraverseIndex:
		if step.Key.Type() == cty.String && step.Key.IsKnown() && !step.Key.IsNull() {
			return Address(root, step.Key.AsString(), 1)
		}
	}
	return root + ".?"
}

// bodyTraversals returns every variable traversal used by the expressions of a body, nested
// blocks included.
func bodyTraversals(body *hclsyntax.Body) []hcl.Traversal {
	var out []hcl.Traversal
	for _, a := range body.Attributes {
		if a.Name == "depends_on" || a.Name == "notify" {
			continue
		}
		out = append(out, a.Expr.Variables()...)
	}
	for _, blk := range body.Blocks {
		out = append(out, bodyTraversals(blk.Body)...)
	}
	return out
}

// sortNodes checks every edge, finds cycles and returns the nodes in dependency order, ties
// broken by declaration order so that runs are repeatable.
func sortNodes(nodes map[string]*node, groups map[string][]string) ([]*node, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	all := make([]*node, 0, len(nodes))
	for _, n := range nodes {
		all = append(all, n)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].before(all[j]) })
	addrs := make([]string, 0, len(all)+len(groups))
	for _, n := range all {
		addrs = append(addrs, n.addr)
	}
	for g := range groups {
		addrs = append(addrs, g)
	}
	// An edge to a for_each group is an edge to each of its instances; an edge from an instance
	// to its own group (each refers to the block) is dropped.
	for _, n := range all {
		var out []edge
		for _, e := range n.deps {
			inst, ok := groups[e.to]
			if !ok || nodes[e.to] != nil {
				out = append(out, e)
				continue
			}
			for _, a := range inst {
				if a != n.addr && !slices.Contains(inst, n.addr) {
					out = append(out, edge{to: a, rng: e.rng, why: e.why})
				}
			}
		}
		n.deps = out
		var notifies []string
		for _, t := range n.notifies {
			if inst, ok := groups[t]; ok && nodes[t] == nil {
				notifies = append(notifies, inst...)
			} else {
				notifies = append(notifies, t)
			}
		}
		n.notifies = notifies
	}
	// notify = [x] in n means x runs after n: turn those edges around.
	for _, n := range all {
		kept := n.deps[:0]
		for _, e := range n.deps {
			if t, ok := nodes[e.to]; ok && e.why == "notify" && t != n {
				t.deps = append(t.deps, edge{to: n.addr, rng: e.rng, why: "notified by " + n.addr})
				continue
			}
			kept = append(kept, e)
		}
		n.deps = kept
	}
	for _, n := range all {
		kept := n.deps[:0]
		seen := map[string]bool{}
		for _, e := range n.deps {
			if _, ok := nodes[e.to]; !ok {
				diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Reference to undeclared resource",
					Detail: fmt.Sprintf("%s refers to %s (%s), which is not declared in this bundle.%s",
						n.addr, e.to, e.why, DidYouMean(e.to, addrs)), Subject: e.rng.Ptr()})
				continue
			}
			if e.to == n.addr {
				diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Resource depends on itself",
					Detail: fmt.Sprintf("%s refers to itself (%s).", n.addr, e.why), Subject: e.rng.Ptr()})
				continue
			}
			if !seen[e.to] {
				seen[e.to] = true
				kept = append(kept, e)
			}
		}
		n.deps = kept
	}
	if diags.HasErrors() {
		return nil, diags
	}
	// Cycle detection by depth-first search; report each cycle once, at the edge that closes it.
	const (
		white = iota
		grey
		black
	)
	color := map[string]int{}
	var stack []*node
	var visit func(n *node)
	visit = func(n *node) {
		color[n.addr] = grey
		stack = append(stack, n)
		for _, e := range n.deps {
			m := nodes[e.to]
			switch color[m.addr] {
			case white:
				visit(m)
			case grey:
				var path []string
				for i := len(stack) - 1; i >= 0; i-- {
					path = append([]string{stack[i].addr}, path...)
					if stack[i] == m {
						break
					}
				}
				path = append(path, m.addr)
				diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Dependency cycle",
					Detail: fmt.Sprintf("%s depends on %s (%s), which leads back to %s: %s. Remove one of these dependencies.",
						n.addr, m.addr, e.why, n.addr, strings.Join(path, " -> ")),
					Subject: e.rng.Ptr()})
			}
		}
		stack = stack[:len(stack)-1]
		color[n.addr] = black
	}
	for _, n := range all {
		if color[n.addr] == white {
			visit(n)
		}
	}
	if diags.HasErrors() {
		return nil, diags
	}
	// Kahn's algorithm, always taking the ready node declared first.
	indeg := map[string]int{}
	dependents := map[string][]*node{}
	for _, n := range all {
		indeg[n.addr] = len(n.deps)
		for _, e := range n.deps {
			dependents[e.to] = append(dependents[e.to], n)
		}
	}
	var ready, order []*node
	for _, n := range all {
		if indeg[n.addr] == 0 {
			ready = append(ready, n)
		}
	}
	for len(ready) > 0 {
		sort.Slice(ready, func(i, j int) bool { return ready[i].before(ready[j]) })
		n := ready[0]
		ready = ready[1:]
		order = append(order, n)
		for _, m := range dependents[n.addr] {
			indeg[m.addr]--
			if indeg[m.addr] == 0 {
				ready = append(ready, m)
			}
		}
	}
	return order, diags
}
