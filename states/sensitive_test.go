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
	}
	for name, args := range calls {
		v, err := fns[name].Call(args)
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
