package states_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/brinecm/brine/states"
	"github.com/brinecm/brine/states/resources/restest"
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
	b := &states.Bundle{Files: map[string][]byte{"main.hcl": []byte(src), "app.tmpl": []byte(tmpl)}}
	opts := states.Options{Secrets: map[string]string{"api": secret, "pem": testPEM}, Vars: map[string]string{"db_pass": varSecret}}
	// An earlier version of the PEM file is on disk: the diff must not show it either.
	must(t, os.WriteFile(filepath.Join(dir, "key.pem"), []byte(strings.Replace(testPEM, "abc", "xyz", 1)), 0o600))
	for _, dry := range []bool{true, false} {
		g, diags := restest.Compile(b, builtinTypes, opts)
		if diags.HasErrors() {
			t.Fatal(diags)
		}
		rep := states.Run(context.Background(), g, dry)
		raw, _ := json.Marshal(rep)
		var human bytes.Buffer
		states.RenderReport(&human, rep, true, false)
		for _, out := range []string{string(raw), human.String()} {
			for _, f := range secretForms(secret, varSecret) {
				if strings.Contains(out, f) {
					t.Fatalf("dry=%v: %q shows in the report:\n%s", dry, f, out)
				}
			}
		}
		byAddr := map[string]states.Result{}
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
		if r := byAddr["exec.echo"]; r.Status != states.StatusFailed && !dry {
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

// A sensitive value cannot name instances, and a diagnostic never quotes a sensitive value.
func TestSensitiveDiagnostics(t *testing.T) {
	opts := states.Options{Secrets: map[string]string{"s": "0799-secret"}}
	for src, want := range map[string]string{
		`file "x" { 
  for_each = toset([secret("s")])
  path = "/tmp/${each.key}"
}`: "cannot be sensitive",
		`file "/tmp/x" { mode = secret("s") }`:              "Invalid file mode",
		`file "/tmp/x" { content = tonumber(secret("s")) }`: "sensitive",
	} {
		_, diags := restest.Compile(&states.Bundle{Files: map[string][]byte{"main.hcl": []byte(src)}}, builtinTypes, opts)
		var buf bytes.Buffer
		states.WriteDiagnostics(&buf, nil, diags, false)
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
			g, diags := restest.Compile(&states.Bundle{Files: map[string][]byte{"main.hcl": []byte(src)}}, builtinTypes, states.Options{Secrets: map[string]string{"s": secret}})
			var buf bytes.Buffer
			states.WriteDiagnostics(&buf, nil, diags, false)
			if diags.HasErrors() {
				if strings.Contains(buf.String(), "s3cr3t") {
					t.Fatalf("diagnostic leaks:\n%s", buf.String())
				}
				t.Logf("refused: %s", buf.String())
				return
			}
			rep := states.Run(context.Background(), g, true)
			raw, _ := json.Marshal(rep)
			for _, f := range []string{"s3cr3t", "S3CR3T", "zz-s#cr#t"} {
				if strings.Contains(string(raw), f) {
					t.Fatalf("%q leaks: %s", f, raw)
				}
			}
		})
	}
	// A sensitive list variable cannot name instances.
	_, diags := restest.Compile(&states.Bundle{Files: map[string][]byte{"main.hcl": []byte(`
variable "hosts" {
  type      = list(string)
  sensitive = true
}
file "h" {
  for_each = toset(var.hosts)
  path     = "/tmp/${each.key}"
}`)}}, builtinTypes, states.Options{Vars: map[string]string{"hosts": `["secret-host"]`}})
	var buf bytes.Buffer
	states.WriteDiagnostics(&buf, nil, diags, false)
	if !diags.HasErrors() || !strings.Contains(buf.String(), "cannot be sensitive") || strings.Contains(buf.String(), "secret-host") {
		t.Fatalf("sensitive for_each:\n%s", buf.String())
	}
}

func TestSecretsAreRedactedFromDiffs(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "token")
	g, diags := restest.Compile(&states.Bundle{Files: map[string][]byte{"main.hcl": []byte(`file "` + p + `" { content = "token=${secret("api")}\n" }`)}},
		builtinTypes, states.Options{Secrets: map[string]string{"api": "s3cr3t-value"}})
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	rep := states.Run(context.Background(), g, false)
	if strings.Contains(rep.Results[0].Diff, "s3cr3t-value") || !strings.Contains(rep.Results[0].Diff, "(sensitive content)") {
		t.Fatalf("diff leaks the secret: %q", rep.Results[0].Diff)
	}
	data, _ := os.ReadFile(p)
	if string(data) != "token=s3cr3t-value\n" {
		t.Fatalf("file content %q", data)
	}
}

// A multi-line secret (a private key written by a file resource) appears in a unified diff line
// by line: no line of it may reach the report.
func TestRedactMultiLineSecret(t *testing.T) {
	dir := t.TempDir()
	key := "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----\n"
	b := &states.Bundle{Files: map[string][]byte{"main.hcl": []byte(`file "` + dir + `/key" { content = secret("k") }` + "\n")}}
	g, diags := restest.Compile(b, builtinTypes, states.Options{Secrets: map[string]string{"k": key}})
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	rep := states.Run(context.Background(), g, true)
	if len(rep.Results) != 1 || rep.Results[0].Status != states.StatusChanged {
		t.Fatalf("plan: %+v", rep.Results)
	}
	for _, l := range strings.Split(key, "\n") {
		if l != "" && strings.Contains(rep.Results[0].Diff, l) {
			t.Errorf("the diff shows the secret's line %q:\n%s", l, rep.Results[0].Diff)
		}
	}
}
