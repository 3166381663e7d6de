package states

import (
	"bytes"
	"testing"
)

// Whatever the bytes, the nesting check and the parser behind it return diagnostics; the
// bound holds for any mix of brackets, quotes, templates and operators.
func FuzzParseBounded(f *testing.F) {
	for _, s := range []string{"a = [[1]]", "b {\n c { d = \"${x ? y : z}\" }\n}", "%{ if a }${b}%{ endif }", "x = !!-1 - 2", "\"${\"${", "}}}]]))"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		for _, repeat := range []int{1, 300} {
			in := bytes.Repeat(src, repeat)
			_, _ = parseConfig(in, "f.hcl")
			_, _ = parseTemplate(in, "f.tmpl")
		}
	})
}
