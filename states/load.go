package states

import (
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/agext/levenshtein"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/dynblock"
	"github.com/hashicorp/hcl/v2/ext/typeexpr"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	ctyjson "github.com/zclconf/go-cty/cty/json"
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

var variableSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "type"}, {Name: "default"}, {Name: "description"}, {Name: "sensitive"},
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

// parseFiles parses every *.hcl file of the bundle, in name order.
func (b *Bundle) parseFiles() ([]*hcl.File, map[string]*hcl.File, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	var files []*hcl.File
	byName := map[string]*hcl.File{}
	for _, n := range b.names() {
		if path.Ext(n) != ".hcl" {
			continue
		}
		name := b.displayName(n)
		f, d := parseConfig(b.Files[n], name)
		diags = append(diags, d...)
		if f != nil {
			files = append(files, f)
			byName[name] = f
		}
	}
	// An .hcl file that ReadBundle left out would silently change what the bundle means.
	var left []string
	for n := range b.escaping {
		if path.Ext(n) == ".hcl" {
			left = append(left, n)
		}
	}
	sort.Strings(left)
	for _, n := range left {
		name := b.displayName(n)
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "File refused",
			Detail: fmt.Sprintf("%s %s, so it is not read. A bundle holds only regular files inside its root: copy the file into the bundle instead.",
				name, b.escaping[n]),
			Subject: &hcl.Range{Filename: name, Start: hcl.InitialPos, End: hcl.InitialPos}})
	}
	return files, byName, diags
}

// displayName is how a bundle file is named in diagnostics: under the directory the user gave.
func (b *Bundle) displayName(n string) string {
	if b.Root == "" {
		return n
	}
	return path.Join(strings.TrimSuffix(b.Root, "/"), n)
}

func topSchema() *hcl.BodySchema {
	s := &hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{{Type: "variable", LabelNames: []string{"name"}}, {Type: "locals"}}}
	for _, n := range TypeNames() {
		t := lookupType(n)
		labels := make([]string, t.Labels)
		for i := range labels {
			labels[i] = "name"
		}
		s.Blocks = append(s.Blocks, hcl.BlockHeaderSchema{Type: n, LabelNames: labels})
	}
	return s
}

// Check validates what can be validated without a minion: syntax, block and resource types,
// references, dependency cycles and variables given with --var. The CLI runs it before sending a
// bundle anywhere; Compile does the rest (expressions, arguments, for_each) for each minion.
func Check(b *Bundle, opts Options) hcl.Diagnostics {
	blocks, diags := parseBlocks(b)
	if diags.HasErrors() {
		return diags
	}
	_, d := evalVariables(blocks, opts, nil)
	diags = append(diags, d...)
	nodes, groups, d := collectNodes(blocks, nil)
	diags = append(diags, d...)
	if diags.HasErrors() {
		return diags
	}
	_, d = sortNodes(nodes, groups)
	return append(diags, d...)
}

// parseBlocks reads a bundle's files into its top-level blocks.
func parseBlocks(b *Bundle) ([]*hcl.Block, hcl.Diagnostics) {
	files, _, diags := b.parseFiles()
	if diags.HasErrors() {
		return nil, diags
	}
	if len(files) == 0 {
		return nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Empty bundle",
			Detail: fmt.Sprintf("No *.hcl files in %s. A bundle is a directory of *.hcl files.", b.displayName("."))}}
	}
	schema := topSchema()
	var blocks []*hcl.Block
	for _, f := range files {
		content, d := f.Body.Content(schema)
		diags = append(diags, d...)
		if content != nil {
			blocks = append(blocks, content.Blocks...)
		}
	}
	return blocks, diags
}

// Compile parses and validates a bundle for one minion and decodes every resource. When the
// diagnostics hold an error the graph is nil: nothing of the bundle may be applied.
func Compile(b *Bundle, opts Options) (*Graph, hcl.Diagnostics) {
	sens := &sensitivity{}
	g, diags := compile(b, opts, sens)
	// Diagnostics may quote a value (a decoder's "mode is "..."", a function's error): never a
	// sensitive one.
	scrubDiagnostics(diags, sens.texts())
	return g, diags
}

func compile(b *Bundle, opts Options, sens *sensitivity) (*Graph, hcl.Diagnostics) {
	blocks, diags := parseBlocks(b)
	if diags.HasErrors() {
		return nil, diags
	}
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
	nodes, groups, d := collectNodes(blocks, base)
	diags = append(diags, d...)
	if diags.HasErrors() {
		return nil, diags
	}
	order, d := sortNodes(nodes, groups)
	diags = append(diags, d...)
	if diags.HasErrors() {
		return nil, diags
	}

	values := map[string]cty.Value{} // address -> value of its attributes, for references
	for _, n := range order {
		ctx := sc.child(base, n.block.DefRange)
		ctx.Variables = refVariables(n, nodes, values)
		if n.each != cty.NilVal {
			ctx.Variables["each"] = n.each
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
	if diags.HasErrors() {
		return nil, diags
	}
	return &Graph{nodes: order, sensitive: sens.texts()}, diags
}

// evalVariables declares the bundle's variables and gives each its value: --var, then --var-file,
// then the default. It returns the object `var`. The values of variables declared
// `sensitive = true` are marked sensitive and recorded in sens (nil when only checking).
func evalVariables(blocks []*hcl.Block, opts Options, sens *sensitivity) (cty.Value, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	type decl struct {
		block     *hcl.Block
		typ       cty.Type
		def       cty.Value
		sensitive bool
	}
	decls := map[string]*decl{}
	var names []string
	for _, blk := range blocks {
		if blk.Type != "variable" {
			continue
		}
		name := blk.Labels[0]
		if prev, dup := decls[name]; dup {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Duplicate variable",
				Detail:  fmt.Sprintf("Variable %q is also declared at %s; each variable is declared once.", name, prev.block.DefRange),
				Subject: blk.DefRange.Ptr()})
			continue
		}
		content, d := blk.Body.Content(variableSchema)
		diags = append(diags, d...)
		dc := &decl{block: blk, typ: cty.DynamicPseudoType, def: cty.NilVal}
		if a, ok := content.Attributes["type"]; ok {
			t, d := typeexpr.TypeConstraint(a.Expr)
			diags = append(diags, d...)
			if !d.HasErrors() {
				dc.typ = t
			}
		}
		if a, ok := content.Attributes["sensitive"]; ok {
			v, d := a.Expr.Value(nil)
			diags = append(diags, d...)
			if !d.HasErrors() {
				if v.Type() != cty.Bool || v.IsNull() {
					diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid sensitive",
						Detail: fmt.Sprintf("sensitive of variable %q must be true or false.", name), Subject: a.Expr.Range().Ptr()})
				} else {
					dc.sensitive = v.True()
				}
			}
		}
		if a, ok := content.Attributes["default"]; ok {
			v, d := a.Expr.Value(nil)
			diags = append(diags, d...)
			if !d.HasErrors() {
				cv, err := convert.Convert(v, dc.typ)
				if err != nil {
					diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid default value for variable",
						Detail: fmt.Sprintf("The default of variable %q does not match its type: %s.", name, err), Subject: a.Expr.Range().Ptr()})
				} else {
					dc.def = cv
				}
			}
		}
		decls[name] = dc
		names = append(names, name)
	}
	values := map[string]cty.Value{}
	// Values from --var-file, in file name order; a later file wins.
	var fileNames []string
	for n := range opts.VarFiles {
		fileNames = append(fileNames, n)
	}
	sort.Strings(fileNames)
	for _, fn := range fileNames {
		f, d := parseConfig(opts.VarFiles[fn], fn)
		diags = append(diags, d...)
		if d.HasErrors() {
			continue
		}
		attrs, d := f.Body.JustAttributes()
		diags = append(diags, d...)
		for name, a := range attrs {
			dc, ok := decls[name]
			if !ok {
				diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Value for undeclared variable",
					Detail: fmt.Sprintf("The bundle declares no variable %q.%s", name, didYouMean(name, names)), Subject: a.NameRange.Ptr()})
				continue
			}
			v, d := a.Expr.Value(nil)
			diags = append(diags, d...)
			if d.HasErrors() {
				continue
			}
			cv, err := convert.Convert(v, dc.typ)
			if err != nil {
				diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid value for variable",
					Detail: fmt.Sprintf("Variable %q: %s.", name, err), Subject: a.Expr.Range().Ptr()})
				continue
			}
			values[name] = cv
		}
	}
	// Values from --var win over files.
	var setNames []string
	for n := range opts.Vars {
		setNames = append(setNames, n)
	}
	sort.Strings(setNames)
	for _, name := range setNames {
		raw := opts.Vars[name]
		dc, ok := decls[name]
		if !ok {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Value for undeclared variable",
				Detail: fmt.Sprintf("--var %s: the bundle declares no variable %q.%s", name, name, didYouMean(name, names))})
			continue
		}
		shown := raw // how the value appears in a diagnostic
		switch {
		case dc.sensitive:
			shown = sensitivePlaceholder
		case len(raw) > 60:
			shown = raw[:60] + "…"
		}
		var v cty.Value
		if dc.typ == cty.String || dc.typ == cty.DynamicPseudoType {
			v = cty.StringVal(raw)
		} else {
			expr, d := parseExpression([]byte(raw), "--var "+name)
			if d.HasErrors() {
				diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid value for variable",
					Detail: fmt.Sprintf("--var %s=%s: not a valid %s value: %s", name, shown, dc.typ.FriendlyName(), d.Error())})
				continue
			}
			v, d = expr.Value(nil)
			if d.HasErrors() {
				diags = append(diags, d...)
				continue
			}
		}
		cv, err := convert.Convert(v, dc.typ)
		if err != nil {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid value for variable",
				Detail: fmt.Sprintf("--var %s=%s: %s.", name, shown, err)})
			continue
		}
		values[name] = cv
	}
	out := map[string]cty.Value{}
	for _, name := range names {
		dc := decls[name]
		v, ok := values[name]
		if !ok {
			if dc.def == cty.NilVal {
				diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "No value for required variable",
					Detail:  fmt.Sprintf("Variable %q has no default; set it with --var %s=VALUE or in a --var-file.", name, name),
					Subject: dc.block.DefRange.Ptr()})
				continue
			}
			v = dc.def
		}
		if dc.sensitive {
			v = sens.markSensitive(v)
		}
		out[name] = v
	}
	return cty.ObjectVal(out), diags
}

// evalLocals evaluates the locals blocks: named expressions over var, minion, functions and other
// locals (not resources), in the order their references need.
func evalLocals(blocks []*hcl.Block, base *hcl.EvalContext, sc *scopes) (cty.Value, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	attrs := map[string]*hcl.Attribute{}
	for _, blk := range blocks {
		if blk.Type != "locals" {
			continue
		}
		as, d := blk.Body.JustAttributes()
		diags = append(diags, d...)
		for name, a := range as {
			if prev, dup := attrs[name]; dup {
				diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Duplicate local value",
					Detail: fmt.Sprintf("local.%s is also defined at %s.", name, prev.NameRange), Subject: a.NameRange.Ptr()})
				continue
			}
			attrs[name] = a
		}
	}
	values := map[string]cty.Value{}
	for len(attrs) > 0 {
		progress := false
		names := make([]string, 0, len(attrs))
		for n := range attrs {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, name := range names {
			a := attrs[name]
			ready := true
			for _, tr := range a.Expr.Variables() {
				if tr.RootName() != "local" || len(tr) < 2 {
					continue
				}
				if step, ok := tr[1].(hcl.TraverseAttr); ok {
					if _, pending := attrs[step.Name]; pending && step.Name != name {
						ready = false
					}
				}
			}
			if !ready {
				continue
			}
			ctx := sc.child(base, a.NameRange)
			ctx.Variables = map[string]cty.Value{"local": cty.ObjectVal(values)}
			v, d := a.Expr.Value(ctx)
			diags = append(diags, d...)
			values[name] = v
			delete(attrs, name)
			progress = true
		}
		if !progress {
			for _, name := range names {
				a := attrs[name]
				diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Local values refer to each other",
					Detail:  fmt.Sprintf("local.%s depends, directly or not, on itself (among %s).", name, strings.Join(names, ", ")),
					Subject: a.Expr.Range().Ptr()})
			}
			break
		}
	}
	return cty.ObjectVal(values), diags
}

func minionValue(m Minion) (cty.Value, error) {
	groups := m.Groups
	if groups == nil {
		groups = []string{}
	}
	facts := m.Facts
	if facts == nil {
		facts = map[string]any{}
	}
	fv, err := toCty(facts)
	if err != nil {
		return cty.NilVal, err
	}
	gv, _ := toCty(groups)
	return cty.ObjectVal(map[string]cty.Value{"id": cty.StringVal(m.ID), "groups": gv, "facts": fv}), nil
}

// toCty converts JSON-shaped Go data (facts, peers) into a cty value. It never panics: go-cty
// does on object keys that are equal after Unicode normalisation ("\u00e9" and "e\u0301"), and
// the data may come from a minion.
func toCty(v any) (val cty.Value, err error) {
	defer func() {
		if r := recover(); r != nil {
			val, err = cty.NilVal, fmt.Errorf("data the language cannot hold: %v", r)
		}
	}()
	data, err := json.Marshal(v)
	if err != nil {
		return cty.NilVal, err
	}
	t, err := ctyjson.ImpliedType(data)
	if err != nil {
		return cty.NilVal, err
	}
	return ctyjson.Unmarshal(data, t)
}

// collectNodes turns resource blocks into nodes and reads their meta-arguments. With ctx, a block
// with for_each becomes one node per element, named by the element (or map key); the block's
// own address then names the group, and depends_on/notify on it mean every instance (groups).
// Without ctx (Check, no minion) such a block stays one node under its own address.
func collectNodes(blocks []*hcl.Block, ctx *hcl.EvalContext) (map[string]*node, map[string][]string, hcl.Diagnostics) {
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
		t := lookupType(blk.Type)
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
				n.deps = append(n.deps, edge{to: traversalAddr(tr), rng: tr.SourceRange(), why: meta})
				if meta == "notify" {
					n.notifies = append(n.notifies, traversalAddr(tr))
				}
			}
		}
		if a, ok := content.Attributes["only_if"]; ok {
			n.onlyIf = a.Expr
		}
		// References to other resources inside any expression of the body.
		for _, tr := range bodyTraversals(blk.Body.(*hclsyntax.Body)) {
			root := tr.RootName()
			if lookupType(root) == nil {
				continue
			}
			n.deps = append(n.deps, edge{to: traversalAddr(tr), rng: tr.SourceRange(), why: "reference"})
		}
		fe, ok := content.Attributes["for_each"]
		if !ok || ctx == nil {
			add(n)
			continue
		}
		instances, d := forEach(t, fe, ctx)
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
func forEach(t *Type, a *hcl.Attribute, ctx *hcl.EvalContext) ([]instance, hcl.Diagnostics) {
	bad := func(detail string) hcl.Diagnostics {
		return hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Invalid for_each", Detail: detail, Subject: a.Expr.Range().Ptr()}}
	}
	if t.Labels == 0 {
		return nil, bad(fmt.Sprintf("%s is a single block per host; it takes no for_each.", t.Name))
	}
	for _, tr := range a.Expr.Variables() {
		if lookupType(tr.RootName()) != nil {
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
func traversalAddr(tr hcl.Traversal) string {
	root := tr.RootName()
	t := lookupType(root)
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
						n.addr, e.to, e.why, didYouMean(e.to, addrs)), Subject: e.rng.Ptr()})
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

// didYouMean returns " Did you mean "x"?" when a candidate is close to given, else "".
func didYouMean(given string, candidates []string) string {
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
