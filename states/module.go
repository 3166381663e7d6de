package states

import (
	"sort"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// Module is a bundle parsed once against a registry of resource types: what the master and the
// CLI need to know of it before any minion (the targets of its peers() calls, the names of its
// secrets, its variables) and the blocks that Check and Compile start from, so that a job
// parses its bundle once however many minions it is checked and compiled for.
type Module struct {
	Bundle *Bundle
	// PeerTargets are the literal targets of every peers("...") call, so that the master knows
	// whose facts to put into a job's context.
	PeerTargets []string
	// SecretNames are the literal names of every secret("...") call.
	SecretNames []string
	// Variables are the names of the variables the bundle declares, sorted.
	Variables []string
	// SensitiveVariables are the variables declared sensitive = true, sorted.
	SensitiveVariables []string
	// CallDiags are about peers() and secret() calls whose argument is not a literal string:
	// the master cannot resolve those before it sends a job, so it refuses such a bundle.
	CallDiags hcl.Diagnostics

	types  *Registry
	blocks []*hcl.Block // the top-level blocks of every file, in file and declaration order
}

// Load parses b's files into blocks against types, once. When the diagnostics hold an error the
// module is nil.
func Load(b *Bundle, types *Registry) (*Module, hcl.Diagnostics) {
	files, blocks, diags := parseBlocks(b, types)
	if diags.HasErrors() {
		return nil, diags
	}
	m := &Module{Bundle: b, types: types, blocks: blocks}
	m.PeerTargets, m.SecretNames, m.CallDiags = literalCalls(files)
	for _, blk := range blocks {
		if blk.Type != "variable" {
			continue
		}
		m.Variables = append(m.Variables, blk.Labels[0])
		if declaredSensitive(blk) {
			m.SensitiveVariables = append(m.SensitiveVariables, blk.Labels[0])
		}
	}
	sort.Strings(m.Variables)
	sort.Strings(m.SensitiveVariables)
	return m, diags
}

// declaredSensitive reports whether a variable block says sensitive = true.
func declaredSensitive(blk *hcl.Block) bool {
	content, _ := blk.Body.Content(variableSchema)
	if content == nil {
		return false
	}
	a, ok := content.Attributes["sensitive"]
	if !ok {
		return false
	}
	v, d := constValue(a.Expr)
	return !d.HasErrors() && v.Type() == cty.Bool && !v.IsNull() && v.True()
}

// literalCalls returns the literal arguments of every peers() and secret() call of files, each
// once, and diagnostics for the calls whose argument is not one literal string.
func literalCalls(files []*hcl.File) (peers, secrets []string, diags hcl.Diagnostics) {
	seen := map[string]map[string]bool{"peers": {}, "secret": {}}
	for _, f := range files {
		body, ok := f.Body.(*hclsyntax.Body)
		if !ok {
			continue
		}
		diags = append(diags, hclsyntax.VisitAll(body, func(n hclsyntax.Node) hcl.Diagnostics {
			call, ok := n.(*hclsyntax.FunctionCallExpr)
			if !ok || seen[call.Name] == nil {
				return nil
			}
			fn := call.Name
			if len(call.Args) != 1 {
				return hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Invalid " + fn + "() call",
					Detail: fn + "() takes exactly one argument, a literal string.", Subject: call.Range().Ptr()}}
			}
			v, d := constValue(call.Args[0])
			if d.HasErrors() || v.IsNull() || !v.IsKnown() || v.Type().FriendlyName() != "string" {
				return hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Invalid " + fn + "() call",
					Detail:  fn + "() needs a literal string (like " + fn + "(\"group:app\")), so the master can resolve it before sending the job.",
					Subject: call.Args[0].Range().Ptr()}}
			}
			if s := v.AsString(); !seen[fn][s] {
				seen[fn][s] = true
				if fn == "peers" {
					peers = append(peers, s)
				} else {
					secrets = append(secrets, s)
				}
			}
			return nil
		})...)
	}
	return peers, secrets, diags
}
