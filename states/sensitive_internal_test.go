package states

import (
	"strings"
	"testing"

	"github.com/zclconf/go-cty/cty"
)

// Every function of the language keeps the mark on its result, and a function error caused
// by a sensitive argument does not quote it.
func TestFunctionsKeepMarks(t *testing.T) {
	sens := &sensitivity{marked: true} // as in a compile with a sensitive variable: the functions are wrapped
	b := &Bundle{Files: map[string][]byte{"t.tmpl": []byte("v=${v}")}}
	fns := fileFuncs(b, &Options{}, sens)
	s := cty.StringVal("s3cret-value").Mark(sensitiveMark)
	sl := cty.ListVal([]cty.Value{cty.StringVal("k")}).Mark(sensitiveMark)
	sm := cty.MapVal(map[string]cty.Value{"k": cty.StringVal("v")}).Mark(sensitiveMark)
	calls := map[string][]cty.Value{
		"upper": {s}, "lower": {s}, "base64encode": {s}, "sha256": {s}, "trimspace": {s}, "chomp": {s},
		"format": {cty.StringVal("%s!"), s}, "join": {cty.StringVal(","), cty.ListVal([]cty.Value{s, cty.StringVal("x")})},
		"replace": {s, cty.StringVal("s"), cty.StringVal("S")}, "substr": {s, cty.NumberIntVal(0), cty.NumberIntVal(3)},
		"split": {cty.StringVal("-"), s}, "indent": {cty.NumberIntVal(2), s}, "title": {s}, "strrev": {s},
		"trimprefix": {s, cty.StringVal("s3")}, "regex_replace": {s, cty.StringVal("[0-9]"), cty.StringVal("#")},
		"jsonencode": {cty.ObjectVal(map[string]cty.Value{"k": s})}, "tostring": {s}, "coalesce": {s, cty.StringVal("x")},
		"templatefile": {cty.StringVal("t.tmpl"), cty.ObjectVal(map[string]cty.Value{"v": s})},
		"lookup":       {cty.MapVal(map[string]cty.Value{"k": s}), cty.StringVal("k"), cty.StringVal("d")},
		"element":      {cty.ListVal([]cty.Value{s}), cty.NumberIntVal(0)}, "concat": {cty.ListVal([]cty.Value{s})},
		"formatlist": {cty.StringVal("%s"), cty.ListVal([]cty.Value{s})}, "strlen": {s},
		// The functions that see marked arguments and must carry the marks themselves, each
		// with a wholly sensitive argument (a sensitive variable's list or map).
		"abs":       {cty.NumberIntVal(-7).Mark(sensitiveMark)},
		"chunklist": {sl, cty.NumberIntVal(1)},
		"flatten":   {cty.ListVal([]cty.Value{cty.ListVal([]cty.Value{cty.StringVal("a")})}).Mark(sensitiveMark)},
		"keys":      {sm}, "values": {sm}, "length": {sl}, "reverse": {sl},
		"merge":        {sm, cty.MapVal(map[string]cty.Value{"o": cty.StringVal("p")})},
		"setproduct":   {cty.SetVal([]cty.Value{cty.StringVal("a")}).Mark(sensitiveMark), cty.SetVal([]cty.Value{cty.StringVal("b")})},
		"slice":        {sl, cty.NumberIntVal(0), cty.NumberIntVal(1)},
		"zipmap":       {sl, cty.ListVal([]cty.Value{cty.StringVal("v")})},
		"coalescelist": {sl, cty.ListVal([]cty.Value{cty.StringVal("v")})},
		"concat ":      {sl},
		"element ":     {sl, cty.NumberIntVal(0)},
		"lookup ":      {sm, cty.StringVal("k"), cty.StringVal("d")},
	}
	for name, f := range standardFuncs() {
		opts := false
		for _, p := range f.Params() {
			opts = opts || p.AllowMarked
		}
		if vp := f.VarParam(); vp != nil {
			opts = opts || vp.AllowMarked
		}
		if _, tested := calls[name]; opts && !tested {
			t.Errorf("%s handles marks itself: add it to this test", name)
		}
	}
	for name, args := range calls {
		v, err := fns[strings.TrimSpace(name)].Call(args)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !v.ContainsMarked() {
			t.Errorf("%s(sensitive) lost the mark: %#v", name, v)
		}
	}
	_, err := fns["tonumber"].Call([]cty.Value{s})
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("tonumber error quotes the secret: %v", err)
	}
	_, err = fns["regex"].Call([]cty.Value{cty.StringVal("(("), s})
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("regex error quotes the secret: %v", err)
	}
}

// The functions are wrapped (trackFunc) only in a compile where a value may be sensitive: one
// with a secret to give or a sensitive variable. Elsewhere they are the language's own, which
// cost each call two deep walks of every argument less.
func TestFunctionsWrappedOnlyWhenSensitive(t *testing.T) {
	b := &Bundle{Files: map[string][]byte{"t.tmpl": []byte("x")}}
	if fns := fileFuncs(b, &Options{}, &sensitivity{}); fns["lookup"] != standardFuncs()["lookup"] {
		t.Error("lookup wrapped in a compile without secrets or sensitive variables")
	}
	if fns := fileFuncs(b, &Options{Secrets: map[string]string{"k": "v"}}, &sensitivity{}); fns["lookup"] == standardFuncs()["lookup"] {
		t.Error("lookup not wrapped in a compile with a secret")
	}
	sens := &sensitivity{}
	sens.markSensitive(cty.StringVal("a sensitive variable's value"))
	if fns := fileFuncs(b, &Options{}, sens); fns["lookup"] == standardFuncs()["lookup"] {
		t.Error("lookup not wrapped in a compile with a sensitive variable")
	}
}
