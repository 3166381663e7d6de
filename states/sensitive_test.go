package states

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zclconf/go-cty/cty"
)

// testPEM is a multi-line secret whose lines could each show up in a line diff.
const testPEM = `-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7mirnSecretLine1
qH9Zt0pQ3xV6n1K9y2L8wR5tE4uI7oP0aSdFgHjKlZxCvBnM1secretLine2abc
-----END PRIVATE KEY-----
`

// secretForms are the shapes a secret takes on its way through a bundle; none may reach output.
func secretForms(secret, varSecret string) []string {
	forms := []string{secret, strings.ToUpper(secret), base64.StdEncoding.EncodeToString([]byte(secret)), varSecret, strings.ToUpper(varSecret)}
	for _, line := range strings.Split(strings.TrimSpace(testPEM), "\n") {
		if !strings.HasPrefix(line, "-----") {
			forms = append(forms, line)
		}
	}
	return forms
}

// Secrets follow the value: through functions, templates, interpolation, heredocs, references
// and sensitive variables, into a plan and an apply, a sensitive value shows nowhere in the
// report, diffs and errors included.
func TestSensitiveValuesFollowTheValue(t *testing.T) {
	const secret, varSecret = "hunter2-Zq9", "pa55w0rd-var"
	dir := t.TempDir()
	tmpl := "user = admin\npassword = ${pw}\n"
	src := `
variable "db_pass" {
  type      = string
  sensitive = true
}
locals {
  b64 = base64encode(secret("api"))
}
file "plain" {
  path    = "` + dir + `/plain"
  content = "${upper(secret("api"))}\n"
}
file "b64" {
  path    = "` + dir + `/b64"
  content = local.b64
}
file "tmpl" {
  path    = "` + dir + `/tmpl"
  content = templatefile("app.tmpl", { pw = secret("api") })
}
file "heredoc" {
  path    = "` + dir + `/heredoc"
  content = <<-EOT
    [db]
    password = ${format("%s", upper(var.db_pass))}
    joined = ${join(",", [secret("api"), "x"])}
    EOT
}
file "pem" {
  path    = "` + dir + `/key.pem"
  content = secret("pem")
  mode    = "0600"
}
file "ref" {
  path    = "` + dir + `/ref"
  content = "copy: ${file.b64.content}"
}
file "public" {
  path    = "` + dir + `/public"
  content = "user = admin\n[db]\n"
}
exec "echo" {
  command = "echo ${base64encode(secret("api"))} >&2; echo ${upper(var.db_pass)} >&2; false"
}
`
	b := &Bundle{Files: map[string][]byte{"main.hcl": []byte(src), "app.tmpl": []byte(tmpl)}}
	opts := Options{Secrets: map[string]string{"api": secret, "pem": testPEM}, Vars: map[string]string{"db_pass": varSecret}}
	// An earlier version of the PEM file is on disk: the diff must not show it either.
	must(t, os.WriteFile(filepath.Join(dir, "key.pem"), []byte(strings.Replace(testPEM, "abc", "xyz", 1)), 0o600))
	for _, dry := range []bool{true, false} {
		g, diags := Compile(b, opts)
		if diags.HasErrors() {
			t.Fatal(diags)
		}
		rep := Run(context.Background(), g, dry)
		raw, _ := json.Marshal(rep)
		var human bytes.Buffer
		RenderReport(&human, rep, true, false)
		for _, out := range []string{string(raw), human.String()} {
			for _, f := range secretForms(secret, varSecret) {
				if strings.Contains(out, f) {
					t.Fatalf("dry=%v: %q shows in the report:\n%s", dry, f, out)
				}
			}
		}
		byAddr := map[string]Result{}
		for _, r := range rep.Results {
			byAddr[r.Address] = r
		}
		if dry {
			for _, a := range []string{`file.plain`, `file.tmpl`, `file.heredoc`, `file.pem`, `file.ref`, `file.b64`} {
				if d := byAddr[a].Diff; !strings.Contains(d, "(sensitive content)") {
					t.Errorf("%s: diff %q does not say (sensitive content)", a, d)
				}
			}
		}
		// Only sensitive text is hidden: the public lines of the template stay in other diffs.
		if d := byAddr["file.public"].Diff; dry && (!strings.Contains(d, "+user = admin") || !strings.Contains(d, "+[db]")) {
			t.Errorf("a public file's diff is redacted: %q", d)
		}
		if r := byAddr["exec.echo"]; r.Status != StatusFailed && !dry {
			t.Errorf("exec: %+v", r)
		}
	}
	// The files hold the real values: only the output is redacted.
	got, _ := os.ReadFile(filepath.Join(dir, "tmpl"))
	if string(got) != "user = admin\npassword = "+secret+"\n" {
		t.Fatalf("tmpl file: %q", got)
	}
	got, _ = os.ReadFile(filepath.Join(dir, "heredoc"))
	if !strings.Contains(string(got), strings.ToUpper(varSecret)) {
		t.Fatalf("heredoc file: %q", got)
	}
}

// Every function of the language keeps the mark on its result, and a function error caused
// by a sensitive argument does not quote it.
func TestFunctionsKeepMarks(t *testing.T) {
	sens := &sensitivity{}
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

// A sensitive value cannot name instances, and a diagnostic never quotes a sensitive value.
func TestSensitiveDiagnostics(t *testing.T) {
	opts := Options{Secrets: map[string]string{"s": "0799-secret"}}
	for src, want := range map[string]string{
		`file "x" { 
  for_each = toset([secret("s")])
  path = "/tmp/${each.key}"
}`: "cannot be sensitive",
		`file "/tmp/x" { mode = secret("s") }`:              "Invalid file mode",
		`file "/tmp/x" { content = tonumber(secret("s")) }`: "sensitive",
	} {
		_, diags := Compile(&Bundle{Files: map[string][]byte{"main.hcl": []byte(src)}}, opts)
		var buf bytes.Buffer
		WriteDiagnostics(&buf, nil, diags, false)
		if !diags.HasErrors() || !strings.Contains(buf.String(), want) || strings.Contains(buf.String(), "0799-secret") {
			t.Errorf("%s:\n%s", src, buf.String())
		}
	}
}

// Marked values in every position the language allows: no panic, no leak, and a diagnostic (not
// a crash) where a sensitive value is not allowed.
func TestSensitiveEdgeCases(t *testing.T) {
	const secret = "a1,b2,zz-s3cr3t"
	dir := t.TempDir()
	cases := map[string]string{
		"only_if":       `only_if = secret("s") != "x"` + "\n  content = \"x\"",
		"for expr":      `content = join("|", [for c in split(",", secret("s")) : upper(c)])`,
		"index":         `content = split(",", secret("s"))[2]`,
		"conditional":   `content = secret("s") != "" ? secret("s") : "none"`,
		"length":        `content = "${length(split(",", secret("s")))} ${strlen(secret("s"))}"`,
		"jsonencode":    `content = jsonencode({ k = secret("s") })`,
		"object attr":   `content = { a = secret("s"), b = "x" }.a`,
		"try":           `content = try(tonumber(secret("s")), "fallback")`,
		"regex_replace": `content = regex_replace(secret("s"), "[0-9]", "#")`,
	}
	for name, body := range cases {
		t.Run(name, func(t *testing.T) {
			src := "file \"f\" {\n  path = \"" + dir + "/" + strings.ReplaceAll(name, " ", "_") + "\"\n  " + body + "\n}\n" +
				"file \"mapped\" {\n  for_each = { one = secret(\"s\") }\n  path = \"" + dir + "/m-${each.key}\"\n  content = each.value\n}\n" +
				"ufw {\n  dynamic \"rule\" {\n    for_each = { ssh = secret(\"s\") }\n    labels = [rule.key]\n    content {\n      port = \"22\"\n      proto = \"tcp\"\n      comment = rule.value\n    }\n  }\n}\n"
			g, diags := Compile(&Bundle{Files: map[string][]byte{"main.hcl": []byte(src)}}, Options{Secrets: map[string]string{"s": secret}})
			var buf bytes.Buffer
			WriteDiagnostics(&buf, nil, diags, false)
			if diags.HasErrors() {
				if strings.Contains(buf.String(), "s3cr3t") {
					t.Fatalf("diagnostic leaks:\n%s", buf.String())
				}
				t.Logf("refused: %s", buf.String())
				return
			}
			rep := Run(context.Background(), g, true)
			raw, _ := json.Marshal(rep)
			for _, f := range []string{"s3cr3t", "S3CR3T", "zz-s#cr#t"} {
				if strings.Contains(string(raw), f) {
					t.Fatalf("%q leaks: %s", f, raw)
				}
			}
		})
	}
	// A sensitive list variable cannot name instances.
	_, diags := Compile(&Bundle{Files: map[string][]byte{"main.hcl": []byte(`
variable "hosts" {
  type      = list(string)
  sensitive = true
}
file "h" {
  for_each = toset(var.hosts)
  path     = "/tmp/${each.key}"
}`)}}, Options{Vars: map[string]string{"hosts": `["secret-host"]`}})
	var buf bytes.Buffer
	WriteDiagnostics(&buf, nil, diags, false)
	if !diags.HasErrors() || !strings.Contains(buf.String(), "cannot be sensitive") || strings.Contains(buf.String(), "secret-host") {
		t.Fatalf("sensitive for_each:\n%s", buf.String())
	}
}
