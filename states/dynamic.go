package states

import (
	"fmt"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// countDynamic adds to *total the blocks that the dynamic blocks of n (and of the blocks merged
// into it) expand to with ctx, nested dynamic blocks included, before anything is expanded.
// Past MaxResources it stops counting and returns a diagnostic at the dynamic block that went
// over: a bundle compiles to at most MaxResources resources and generated blocks in all.
func countDynamic(n *node, ctx *hcl.EvalContext, total *int) hcl.Diagnostics {
	for _, blk := range append([]*node{n}, n.merged...) {
		body, ok := blk.block.Body.(*hclsyntax.Body)
		if !ok {
			continue
		}
		if over := countBody(body, ctx, total); over != nil {
			return hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Too many resources",
				Detail: fmt.Sprintf("With the blocks its dynamic blocks make, %s brings the bundle over %d; a bundle compiles to at most %d resources and generated blocks on one host.",
					n.addr, MaxResources, MaxResources),
				Subject: over.Ptr()}}
		}
	}
	return nil
}

// countBody counts the blocks the dynamic blocks of body make, and returns the range of the
// for_each that brought *total over MaxResources (nil while under). A for_each that does not
// evaluate to a known collection counts nothing: the expansion reports it.
func countBody(body *hclsyntax.Body, ctx *hcl.EvalContext, total *int) *hcl.Range {
	for _, blk := range body.Blocks {
		if blk.Type != "dynamic" || len(blk.Labels) != 1 {
			if over := countBody(blk.Body, ctx, total); over != nil {
				return over
			}
			continue
		}
		fe, ok := blk.Body.Attributes["for_each"]
		if !ok {
			continue
		}
		v, d := fe.Expr.Value(ctx)
		if d.HasErrors() {
			continue
		}
		v, _ = v.UnmarkDeep()
		if v.IsNull() || !v.IsWhollyKnown() || !v.CanIterateElements() {
			continue
		}
		var content *hclsyntax.Body
		for _, c := range blk.Body.Blocks {
			if c.Type == "content" {
				content = c.Body
			}
		}
		rng := fe.Expr.Range()
		if content == nil || !hasDynamic(content) {
			*total += v.LengthInt()
			if *total > MaxResources {
				return &rng
			}
			continue
		}
		iter := blk.Labels[0]
		if a, ok := blk.Body.Attributes["iterator"]; ok {
			if tr, d := hcl.AbsTraversalForExpr(a.Expr); !d.HasErrors() && len(tr) == 1 {
				iter = tr.RootName()
			}
		}
		for it := v.ElementIterator(); it.Next(); {
			*total++
			if *total > MaxResources {
				return &rng
			}
			k, e := it.Element()
			child := ctx.NewChild()
			child.Variables = map[string]cty.Value{iter: cty.ObjectVal(map[string]cty.Value{"key": k, "value": e})}
			if over := countBody(content, child, total); over != nil {
				return over
			}
		}
	}
	return nil
}

// hasDynamic reports whether body holds a dynamic block, at any depth.
func hasDynamic(body *hclsyntax.Body) bool {
	for _, blk := range body.Blocks {
		if blk.Type == "dynamic" || hasDynamic(blk.Body) {
			return true
		}
	}
	return false
}
