package states

import (
	"strings"
	"testing"
)

// Values read without a context (outside the bounded compile child: the CLI's check, the
// master's reading of every submitted bundle) may not hold for expressions: five nested ones
// over a literal list of 100 numbers would be 10^10 steps in the process that reads them.
func TestConstantsRefuseForExpressions(t *testing.T) {
	var list []string
	for i := range 100 {
		list = append(list, string(rune('0'+i%10)))
	}
	l := "[" + strings.Join(list, ",") + "]"
	bomb := "length([for a in " + l + " : [for b in " + l + " : [for c in " + l + " : [for d in " + l + " : [for e in " + l + " : e]]]]])"
	for _, tc := range []struct {
		name, src string
		vars      map[string]string
		check     func(b *Bundle) []string
		want      string
	}{
		{"default", "variable \"n\" {\n  default = " + bomb + "\n}\n", nil, nil, "main.hcl:2,"},
		{"sensitive", "variable \"n\" {\n  default = 1\n  sensitive = " + bomb + " > 0\n}\n", nil, nil, "main.hcl:3,"},
		{"--var", "variable \"n\" { type = number }\n", map[string]string{"n": bomb}, nil, "--var n"},
		{"secret()", "locals {\n  x = secret(\"${" + bomb + "}\")\n}\n", nil, func(b *Bundle) []string {
			m, d := Load(b, NewRegistry())
			if d.HasErrors() {
				return []string{d.Error()}
			}
			return []string{m.CallDiags.Error()}
		}, "main.hcl:2,14-1103: Invalid secret() call"},
		{"sensitive variables", "variable \"n\" {\n  default = 1\n  sensitive = " + bomb + " > 0\n}\n", nil, func(b *Bundle) []string {
			m, d := Load(b, NewRegistry())
			if d.HasErrors() {
				return []string{d.Error()}
			}
			return m.SensitiveVariables
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &Bundle{Files: map[string][]byte{"main.hcl": []byte(tc.src)}}
			if tc.check != nil {
				got := tc.check(b)
				if tc.want == "" && len(got) != 0 || tc.want != "" && (len(got) != 1 || !strings.Contains(got[0], tc.want)) {
					t.Fatalf("got %q", got)
				}
				return
			}
			m, d := Load(b, NewRegistry())
			if !d.HasErrors() {
				d = Check(m, Options{Vars: tc.vars})
			}
			if !d.HasErrors() || !strings.Contains(d.Error(), "For expression not allowed here") || !strings.Contains(d.Error(), tc.want) {
				t.Fatalf("got %v", d)
			}
		})
	}
}
