package states

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"path"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/tryfunc"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
)

// standardFuncs are HCL's standard functions (go-cty's stdlib) under the names Terraform users know.
func standardFuncs() map[string]function.Function {
	return map[string]function.Function{
		"abs": stdlib.AbsoluteFunc, "ceil": stdlib.CeilFunc, "floor": stdlib.FloorFunc,
		"log": stdlib.LogFunc, "pow": stdlib.PowFunc, "signum": stdlib.SignumFunc,
		"max": stdlib.MaxFunc, "min": stdlib.MinFunc, "parseint": stdlib.ParseIntFunc,
		"chomp": stdlib.ChompFunc, "format": stdlib.FormatFunc, "formatlist": stdlib.FormatListFunc,
		"indent": stdlib.IndentFunc, "join": stdlib.JoinFunc, "lower": stdlib.LowerFunc,
		"upper": stdlib.UpperFunc, "replace": stdlib.ReplaceFunc, "regex": stdlib.RegexFunc,
		"regexall": stdlib.RegexAllFunc, "regex_replace": stdlib.RegexReplaceFunc,
		"split": stdlib.SplitFunc, "strlen": stdlib.StrlenFunc, "strrev": stdlib.ReverseFunc,
		"substr": stdlib.SubstrFunc, "title": stdlib.TitleFunc, "trim": stdlib.TrimFunc,
		"trimprefix": stdlib.TrimPrefixFunc, "trimsuffix": stdlib.TrimSuffixFunc,
		"trimspace": stdlib.TrimSpaceFunc,
		"chunklist": stdlib.ChunklistFunc, "coalesce": stdlib.CoalesceFunc,
		"coalescelist": stdlib.CoalesceListFunc, "compact": stdlib.CompactFunc,
		"concat": stdlib.ConcatFunc, "contains": stdlib.ContainsFunc, "distinct": stdlib.DistinctFunc,
		"element": stdlib.ElementFunc, "flatten": stdlib.FlattenFunc, "index": stdlib.IndexFunc,
		"keys": stdlib.KeysFunc, "length": stdlib.LengthFunc, "lookup": stdlib.LookupFunc,
		"merge": stdlib.MergeFunc, "range": stdlib.RangeFunc, "reverse": stdlib.ReverseListFunc,
		"setintersection": stdlib.SetIntersectionFunc, "setproduct": stdlib.SetProductFunc,
		"setsubtract": stdlib.SetSubtractFunc, "setunion": stdlib.SetUnionFunc,
		"slice": stdlib.SliceFunc, "sort": stdlib.SortFunc, "values": stdlib.ValuesFunc,
		"zipmap":    stdlib.ZipmapFunc,
		"csvdecode": stdlib.CSVDecodeFunc, "jsondecode": stdlib.JSONDecodeFunc,
		"jsonencode": stdlib.JSONEncodeFunc, "formatdate": stdlib.FormatDateFunc,
		"timeadd": stdlib.TimeAddFunc,
		"try":     tryfunc.TryFunc, "can": tryfunc.CanFunc,
		"tostring": stdlib.MakeToFunc(cty.String), "tonumber": stdlib.MakeToFunc(cty.Number),
		"tobool": stdlib.MakeToFunc(cty.Bool), "toset": stdlib.MakeToFunc(cty.Set(cty.DynamicPseudoType)),
		"tolist": stdlib.MakeToFunc(cty.List(cty.DynamicPseudoType)), "tomap": stdlib.MakeToFunc(cty.Map(cty.DynamicPseudoType)),
		"base64encode": stringFunc(func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }),
		"sha256": stringFunc(func(s string) string {
			sum := sha256.Sum256([]byte(s))
			return hex.EncodeToString(sum[:])
		}),
	}
}

func stringFunc(f func(string) string) function.Function {
	return function.New(&function.Spec{
		Params: []function.Parameter{{Name: "str", Type: cty.String}},
		Type:   function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			return cty.StringVal(f(args[0].AsString())), nil
		},
	})
}

// Path resolves a path written in a bundle to a key of b.Files. It refuses, with a sentence
// saying why, anything that would reach outside the bundle root: absolute paths, "..", symlinks
// that point outside and hard links (ReadBundle left those out and remembered them).
func (b *Bundle) Path(p string) (string, error) {
	if p == "" {
		return "", fmt.Errorf("the path is empty")
	}
	if strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("%q is an absolute path; paths in a bundle are relative to the bundle root", p)
	}
	clean := path.Clean(p)
	if clean == ".." || strings.HasPrefix(clean, "../") {
		return "", fmt.Errorf("%q escapes the bundle root", p)
	}
	if why, ok := b.escaping[clean]; ok {
		return "", fmt.Errorf("%q %s", p, why)
	}
	if _, ok := b.Files[clean]; !ok {
		return "", fmt.Errorf("no file %q in the bundle", p)
	}
	return clean, nil
}

// fileFuncs returns file(), templatefile(), peers() and secret() bound to one bundle and one
// minion's context. templatefile renders with the standard functions and file(), but not with
// itself (no recursion) and never with anything that could run a command. secret() returns a
// sensitive (marked) value; when the compile has a secret or a sensitive variable, every
// function is wrapped so that the sensitive values it returns are recorded in sens and its
// errors never quote a sensitive argument.
func fileFuncs(b *Bundle, opts *Options, sens *sensitivity) map[string]function.Function {
	fns := standardFuncs()
	fns["file"] = function.New(&function.Spec{
		Params: []function.Parameter{{Name: "path", Type: cty.String}},
		Type:   function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			p, err := b.Path(args[0].AsString())
			if err != nil {
				return cty.NilVal, err
			}
			return cty.StringVal(string(b.Files[p])), nil
		},
	})
	tmplFuncs := map[string]function.Function{}
	for k, v := range fns {
		tmplFuncs[k] = v
	}
	fns["templatefile"] = function.New(&function.Spec{
		Params: []function.Parameter{{Name: "path", Type: cty.String}, {Name: "vars", Type: cty.DynamicPseudoType}},
		Type:   function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			return RenderTemplate(b, args[0].AsString(), args[1], tmplFuncs)
		},
	})
	fns["peers"] = function.New(&function.Spec{
		Params: []function.Parameter{{Name: "target", Type: cty.String}},
		Type:   function.StaticReturnType(cty.DynamicPseudoType),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			facts := opts.Peers[args[0].AsString()]
			if len(facts) == 0 {
				return cty.EmptyTupleVal, nil
			}
			return toCty(facts)
		},
	})
	fns["secret"] = function.New(&function.Spec{
		Params: []function.Parameter{{Name: "name", Type: cty.String}},
		Type:   function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			name := args[0].AsString()
			v, ok := opts.Secrets[name]
			if !ok {
				return cty.NilVal, fmt.Errorf("secret %q is not available to this minion", name)
			}
			return sens.markSensitive(cty.StringVal(v)), nil
		},
	})
	// Wrapped only when a value of this compile may be sensitive: a secret to give, or a
	// sensitive variable (marked by evalVariables, which runs before). Otherwise no value is
	// marked, and a wrapper records nothing and hides nothing, but costs each call two more deep
	// walks of every argument: cty's Function.Call tests ContainsMarked before AllowMarked, so
	// lookup(minion.facts, ...) walked the host's facts three times per call (a quarter of a
	// minion's CPU applying 20 files: BENCHMARKS.md, "A minion's CPU per apply").
	if sens != nil && !sens.marked && len(opts.Secrets) == 0 {
		return fns
	}
	for name, f := range fns {
		if name != "try" && name != "can" { // these take expressions, not values
			fns[name] = trackFunc(f, sens)
		}
	}
	for name, f := range tmplFuncs {
		if name != "try" && name != "can" {
			tmplFuncs[name] = trackFunc(f, sens)
		}
	}
	return fns
}

// RenderTemplate renders a template file of the bundle with vars (an object or map).
func RenderTemplate(b *Bundle, p string, vars cty.Value, fns map[string]function.Function) (cty.Value, error) {
	key, err := b.Path(p)
	if err != nil {
		return cty.NilVal, err
	}
	if !vars.Type().IsObjectType() && !vars.Type().IsMapType() {
		return cty.NilVal, fmt.Errorf("template variables must be an object, like { name = \"x\" }")
	}
	expr, diags := parseTemplate(b.Files[key], key)
	if diags.HasErrors() {
		return cty.NilVal, fmt.Errorf("template %s: %s", key, diags.Error())
	}
	ctxVars := map[string]cty.Value{}
	if !vars.IsNull() && vars.IsKnown() {
		for it := vars.ElementIterator(); it.Next(); {
			k, v := it.Element()
			ctxVars[k.AsString()] = v
		}
	}
	val, diags := expr.Value(&hcl.EvalContext{Variables: ctxVars, Functions: fns})
	if diags.HasErrors() {
		return cty.NilVal, fmt.Errorf("template %s: %s", key, diags.Error())
	}
	if !val.Type().Equals(cty.String) || val.IsNull() {
		return cty.NilVal, fmt.Errorf("template %s did not render to a string", key)
	}
	return val, nil
}
