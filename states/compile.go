package states

import (
	"fmt"

	"github.com/agext/levenshtein"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/dynblock"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// Minion is what a bundle sees as `minion`: the id, groups and facts of the host it is rendered for.
type Minion struct {
	ID     string         `json:"id"`
	Groups []string       `json:"groups"`
	Facts  map[string]any `json:"facts"`
}

// Options are the inputs of Compile besides the bundle itself.
type Options struct {
	Minion Minion
	// Vars are --var k=v values, raw: a string variable takes them as they are, any other type
	// parses them as an HCL expression (`--var 'ports=[22,80]'`).
	Vars map[string]string
	// VarFiles are the contents of --var-file files (HCL attributes), by file name.
	VarFiles map[string][]byte
	// Peers holds the result of every peers(TARGET) call, by TARGET as written; the master fills it.
	Peers map[string][]map[string]any
	// Secrets are the secret(NAME) values readable by this minion.
	Secrets map[string]string
}

// Graph is a compiled bundle: every resource decoded and ordered so that each comes after
// everything it depends on.
type Graph struct {
	nodes     []*node  // topological order
	sensitive []string // clear text of every sensitive value seen, longest first: scrubbed from output
}

// Len returns the number of resources in the graph.
func (g *Graph) Len() int { return len(g.nodes) }

// Addresses returns the resource addresses in the order they run.
func (g *Graph) Addresses() []string {
	out := make([]string, len(g.nodes))
	for i, n := range g.nodes {
		out[i] = n.addr
	}
	return out
}

// Resources returns the decoded resources in the order they run.
func (g *Graph) Resources() []Resource {
	out := make([]Resource, len(g.nodes))
	for i, n := range g.nodes {
		out[i] = n.res
	}
	return out
}

// Check validates what can be validated without a minion: syntax, block and resource types,
// references, dependency cycles and variables given with --var. The CLI runs it before sending a
// bundle anywhere; Compile does the rest (expressions, arguments, for_each) for each minion.
func Check(m *Module, opts Options) hcl.Diagnostics {
	diags := hcl.Diagnostics{}
	_, d := evalVariables(m.blocks, opts, nil)
	diags = append(diags, d...)
	nodes, groups, d := collectNodes(m.blocks, m.types, nil)
	diags = append(diags, d...)
	if diags.HasErrors() {
		return diags
	}
	_, d = sortNodes(nodes, groups)
	return append(diags, d...)
}

// Compile validates a loaded bundle for one minion and decodes every resource. When the
// diagnostics hold an error the graph is nil: nothing of the bundle may be applied.
func Compile(m *Module, opts Options) (*Graph, hcl.Diagnostics) {
	sens := &sensitivity{}
	g, diags := compile(m, opts, sens)
	// Diagnostics may quote a value (a decoder's "mode is "..."", a function's error): never a
	// sensitive one.
	scrubDiagnostics(diags, sens.texts())
	return g, diags
}

// compile runs the steps in order, each on what the one before made, from the blocks Load
// parsed (parse.go): give the variables and locals their values (variables.go), turn the
// resource blocks into nodes and sort them by their dependencies (graph.go), and decode each
// node's body into its Resource (decodeNodes).
func compile(m *Module, opts Options, sens *sensitivity) (*Graph, hcl.Diagnostics) {
	b, blocks, diags := m.Bundle, m.blocks, hcl.Diagnostics{}
	vars, d := evalVariables(blocks, opts, sens)
	diags = append(diags, d...)
	minionVal, err := minionValue(opts.Minion)
	if err != nil {
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid minion facts", Detail: err.Error()})
	}
	if diags.HasErrors() {
		return nil, diags
	}
	base := &hcl.EvalContext{
		Variables: map[string]cty.Value{"var": vars, "minion": minionVal},
		Functions: fileFuncs(b, &opts, sens),
	}
	sc := newScopes(b, &opts, sens) // a merged bundle's members keep their own file paths
	locals, d := evalLocals(blocks, base, sc)
	diags = append(diags, d...)
	if diags.HasErrors() {
		return nil, diags
	}
	base.Variables["local"] = locals
	nodes, groups, d := collectNodes(blocks, m.types, base)
	diags = append(diags, d...)
	if diags.HasErrors() {
		return nil, diags
	}
	order, d := sortNodes(nodes, groups)
	diags = append(diags, d...)
	if diags.HasErrors() {
		return nil, diags
	}

	diags = append(diags, decodeNodes(order, nodes, base, sc, sens)...)
	if diags.HasErrors() {
		return nil, diags
	}
	return &Graph{nodes: order, sensitive: sens.texts()}, diags
}

// decodeNodes decodes every node in dependency order, so that each sees the values of the
// resources it refers to.
func decodeNodes(order []*node, nodes map[string]*node, base *hcl.EvalContext, sc *scopes, sens *sensitivity) hcl.Diagnostics {
	var diags hcl.Diagnostics
	values := map[string]cty.Value{} // address -> value of its attributes, for references
	expanded := len(order)           // resources, and the blocks dynamic blocks make (dynamic.go)
	for _, n := range order {
		ctx := sc.child(base, n.block.DefRange)
		ctx.Variables = refVariables(n, nodes, values)
		if n.each != cty.NilVal {
			ctx.Variables["each"] = n.each
		}
		if d := countDynamic(n, ctx, &expanded); d.HasErrors() {
			return append(diags, d...)
		}
		diags = append(diags, decodeNode(n, ctx, sc.bundle(n.block.DefRange), sens)...)
		if len(n.merged) > 0 {
			diags = append(diags, mergeNode(n, ctx, sc)...)
			for _, m := range n.merged { // the merged resource received what its blocks did
				n.sens.absorb(m.sens)
			}
		}
		values[n.addr] = nodeValue(n, ctx)
	}
	return diags
}

// refVariables builds the resource-type variables (file, service, ...) a node may reference:
// the values of its dependencies, which are decoded before it.
func refVariables(n *node, nodes map[string]*node, values map[string]cty.Value) map[string]cty.Value {
	byType := map[string]map[string]cty.Value{}
	singles := map[string]cty.Value{}
	for _, e := range n.deps {
		dep := nodes[e.to]
		v, ok := values[dep.addr]
		if !ok {
			continue
		}
		if dep.typ.Labels == 0 {
			singles[dep.typ.Name] = v
			continue
		}
		if byType[dep.typ.Name] == nil {
			byType[dep.typ.Name] = map[string]cty.Value{}
		}
		byType[dep.typ.Name][dep.name] = v
	}
	out := map[string]cty.Value{}
	for t, m := range byType {
		out[t] = cty.ObjectVal(m)
	}
	for t, v := range singles {
		out[t] = v
	}
	return out
}

// decodeNode evaluates only_if and decodes the node's body into its Resource.
func decodeNode(n *node, ctx *hcl.EvalContext, b *Bundle, sens *sensitivity) hcl.Diagnostics {
	var diags hcl.Diagnostics
	n.sens = &nodeSensitivity{tracker: sens}
	// dynamic "rule" { for_each = ..., content { ... } } blocks expand before the type decodes.
	// The type sees every value unmarked; n.sens learns which arguments were sensitive.
	body := sensitiveBody{Body: dynblock.Expand(n.body, ctx), ns: n.sens}
	req := &DecodeRequest{Name: n.name, Body: body, Ctx: ctx, Block: n.block, Bundle: b, sens: n.sens}
	if n.onlyIf != nil {
		v, d := n.onlyIf.Value(ctx)
		diags = append(diags, d...)
		if d.HasErrors() {
			return diags
		}
		if v.ContainsMarked() {
			n.sens.mark("only_if", v)
			v, _ = v.UnmarkDeep()
		}
		switch {
		case v.IsNull() || !v.IsKnown():
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid only_if",
				Detail: "only_if must be true or false.", Subject: n.onlyIf.Range().Ptr()})
			return diags
		case v.Type() == cty.Bool:
			n.guard = v.True()
			if !n.guard {
				n.reason = "only_if is false"
			}
		case v.Type() == cty.String && n.typ.ShellGuards:
			req.OnlyIf = v.AsString()
		default:
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid only_if",
				Detail: fmt.Sprintf("only_if must be true or false (a %s was given).", v.Type().FriendlyName()), Subject: n.onlyIf.Range().Ptr()})
			return diags
		}
	}
	res, d := n.typ.Decode(req)
	diags = append(diags, d...)
	n.res = res
	return diags
}

// nodeValue is what other resources see when they reference n: its label and the values of its
// top-level arguments.
func nodeValue(n *node, ctx *hcl.EvalContext) cty.Value {
	attrs := map[string]cty.Value{"name": cty.StringVal(n.name)}
	for name, a := range n.block.Body.(*hclsyntax.Body).Attributes {
		// Meta-arguments are not values of the resource; for_each in particular would be
		// evaluated again for every instance (quadratic in the instances).
		if name == "depends_on" || name == "notify" || name == "only_if" || name == "for_each" {
			continue
		}
		if v, d := a.Expr.Value(ctx); !d.HasErrors() {
			attrs[name] = v
		}
	}
	return cty.ObjectVal(attrs)
}

// DidYouMean returns " Did you mean "x"?" when a candidate is close to given, else "".
func DidYouMean(given string, candidates []string) string {
	best, bestDist := "", 4
	for _, c := range candidates {
		if d := levenshtein.Distance(given, c, nil); d < bestDist {
			best, bestDist = c, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" Did you mean %q?", best)
}
