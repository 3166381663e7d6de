package states

import (
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// constValue evaluates an expression that has no context: a variable's default or sensitive,
// a --var value, a --var-file attribute, a literal argument of peers() or secret(), a site
// file's values. These run wherever a bundle is looked at (the CLI's check, the master's
// handling of every submitted bundle, outside the bounded compile child), so they must cost
// time linear in their text: without variables or functions only a for expression (or a
// template's %{ for }) can repeat work, and nested ones multiply (five levels over a literal
// list of 100 elements are 10^10 steps). They are refused here.
func constValue(expr hcl.Expression) (cty.Value, hcl.Diagnostics) {
	if diags := noFor(expr); diags.HasErrors() {
		return cty.DynamicVal, diags
	}
	return expr.Value(nil)
}

// noFor refuses an expression holding a for expression.
func noFor(expr hcl.Expression) hcl.Diagnostics {
	node, ok := expr.(hclsyntax.Node)
	if !ok {
		return nil
	}
	var found *hclsyntax.ForExpr
	hclsyntax.VisitAll(node, func(n hclsyntax.Node) hcl.Diagnostics {
		if f, ok := n.(*hclsyntax.ForExpr); ok && found == nil {
			found = f
		}
		return nil
	})
	if found == nil {
		return nil
	}
	return hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "For expression not allowed here",
		Detail:  "This value is read before any bundle is compiled (a constant: a default, a --var value, an argument of peers() or secret(), a site file), so it may not use for; write the values out.",
		Subject: found.Range().Ptr()}}
}
