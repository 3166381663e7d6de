package states

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/typeexpr"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	ctyjson "github.com/zclconf/go-cty/cty/json"
)

var variableSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "type"}, {Name: "default"}, {Name: "description"}, {Name: "sensitive"},
}}

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
			v, d := constValue(a.Expr)
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
			v, d := constValue(a.Expr)
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
					Detail: fmt.Sprintf("The bundle declares no variable %q.%s", name, DidYouMean(name, names)), Subject: a.NameRange.Ptr()})
				continue
			}
			v, d := constValue(a.Expr)
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
				Detail: fmt.Sprintf("--var %s: the bundle declares no variable %q.%s", name, name, DidYouMean(name, names))})
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
			v, d = constValue(expr)
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
