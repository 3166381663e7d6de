package cloud_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/brinecm/brine/cloud"
	"github.com/brinecm/brine/minion"
)

func TestConfig(t *testing.T) {
	cfg := mustConfig(t, testConfig)
	if cfg.Provider.TokenFile != "/nonexistent" {
		t.Fatalf("provider %+v", cfg.Provider)
	}
	p := cfg.Profiles["app"]
	if p.Region != "ams3" || !p.IPv6 || !p.Monitoring || strings.Join(p.Groups, ",") != "app,web" {
		t.Fatalf("profile %+v", p)
	}
	m, err := cfg.Map("production")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range m.Want() {
		got = append(got, w.Name+"="+w.Profile)
	}
	if strings.Join(got, " ") != "web-1=app web-2=app web-3=app web-4=app web-5=app db-main=db" {
		t.Fatalf("want %v", got)
	}
	if _, err := cfg.Profile("ap"); err == nil || !strings.Contains(err.Error(), `did you mean "app"`) {
		t.Fatalf("profile suggestion: %v", err)
	}
}

func TestConfigDiagnostics(t *testing.T) {
	base := `profile "app" {
  region = "ams3"
  size   = "s-1vcpu-1gb"
  image  = "ubuntu-24-04-x64"
}
`
	cases := []struct {
		name, src, summary, detail, pos string
	}{
		{"unknown profile", base + `map "m" {
  droplet "web" {
    profile = "apq"
    count   = 1
  }
}`, "Unknown profile", `Did you mean "app"?`, "cloud.hcl:8:15"},
		{"count and names", base + `map "m" {
  droplet "web" {
    profile = "app"
    count   = 1
    names   = ["a"]
  }
}`, "Both count and names", "not both", "cloud.hcl:7:3"},
		{"neither", base + `map "m" {
  droplet "web" { profile = "app" }
}`, "Missing count or names", "count = N", "cloud.hcl:7:3"},
		{"bad name", base + `map "m" {
  droplet "web" {
    profile = "app"
    names   = ["Web_1"]
  }
}`, "Invalid droplet name", "minion id", "cloud.hcl:7:3"},
		{"typo attribute", `profile "app" {
  regoin = "ams3"
  size   = "s"
  image  = "i"
}`, "Unsupported argument", `Did you mean "region"?`, "cloud.hcl:2:3"},
		{"missing region", `profile "app" {
  size  = "s"
  image = "i"
}`, "Missing required argument", "region", "cloud.hcl:1:15"},
		{"wrong provider", `provider "aws" {}`, "Unknown provider", "DigitalOcean", "cloud.hcl:1:1"},
		{"duplicate profile", base + base, "Duplicate profile", "already defined", "cloud.hcl:6:1"},
		{"duplicate names", base + `map "m" {
  droplet "web" {
    profile = "app"
    names   = ["a", "a"]
  }
}`, "Duplicate droplet name", `"a" appears twice`, "cloud.hcl:7:3"},
		{"bad tag", `profile "app" {
  region = "r"
  size   = "s"
  image  = "i"
  tags   = ["no spaces"]
}`, "Invalid tag", "no spaces", "cloud.hcl:1:1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, diags := cloud.ParseConfig([]byte(tc.src), "cloud.hcl")
			if !diags.HasErrors() {
				t.Fatal("no error")
			}
			var msgs []string
			for _, d := range diags {
				pos := ""
				if d.Subject != nil {
					pos = fmt.Sprintf("%s:%d:%d", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column)
				}
				if d.Summary == tc.summary && strings.Contains(d.Detail, tc.detail) && pos == tc.pos {
					return
				}
				msgs = append(msgs, fmt.Sprintf("%q %q at %s", d.Summary, d.Detail, pos))
			}
			t.Fatalf("got %v; want %q %q at %s", msgs, tc.summary, tc.detail, tc.pos)
		})
	}
}

func TestUserData(t *testing.T) {
	info := cloud.BootstrapInfo{BinaryURL: "http://10.213.0.1:4507/bootstrap/brine", SHA256: strings.Repeat("0f", 32),
		MasterAddr: "10.213.0.1:4505", MasterFingerprint: "SHA256:abc+/="}
	ud, err := cloud.UserData(cloud.UserDataParams{Bootstrap: info, MinionID: "web-1", Groups: []string{"app", "web"}, Token: "tok-123"})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"#!/bin/sh\n", "BRINE_SHA256='" + strings.Repeat("0f", 32) + "'", `id            = "web-1"`,
		`groups        = ["app", "web"]`, `token         = "tok-123"`, "systemctl enable --now brine-minion.service",
		"nohup /usr/bin/brine-minion", "mv -f \"$tmp\" /usr/bin/brine-minion", `if [ "$got" != "$BRINE_SHA256" ]`,
	} {
		if !strings.Contains(ud, want) {
			t.Fatalf("user data lacks %q:\n%s", want, ud)
		}
	}
	if sh, err := exec.LookPath("sh"); err == nil {
		cmd := exec.Command(sh, "-n")
		cmd.Stdin = strings.NewReader(ud)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("sh -n: %v\n%s", err, out)
		}
	}
	// The minion config the script writes is one the real minion reads, with every value.
	_, rest, _ := strings.Cut(ud, "<<'BRINE_MINION_EOF'\n")
	hclText, _, _ := strings.Cut(rest, "BRINE_MINION_EOF\n")
	path := filepath.Join(t.TempDir(), "minion.hcl")
	if err := os.WriteFile(path, []byte(hclText), 0o600); err != nil {
		t.Fatal(err)
	}
	mc, diags := minion.LoadConfig(path, "", "", "")
	if diags.HasErrors() {
		t.Fatalf("the minion refuses the bootstrap's minion.hcl: %v\n%s", diags, hclText)
	}
	if mc.ID != "web-1" || mc.Master != info.MasterAddr || mc.MasterFinger != info.MasterFingerprint ||
		mc.Token != "tok-123" || strings.Join(mc.Groups, ",") != "app,web" {
		t.Fatalf("minion config %+v from\n%s", mc, hclText)
	}
	// Explicit ports reach the minion as its publish and request ports.
	withPorts := info
	withPorts.MasterAddr, withPorts.PublishPort, withPorts.RequestPort = "10.213.0.1", 14505, 24506
	ud2, err := cloud.UserData(cloud.UserDataParams{Bootstrap: withPorts, MinionID: "web-2", Token: "tok-9"})
	if err != nil {
		t.Fatal(err)
	}
	_, rest, _ = strings.Cut(ud2, "<<'BRINE_MINION_EOF'\n")
	hclText, _, _ = strings.Cut(rest, "BRINE_MINION_EOF\n")
	if err := os.WriteFile(path, []byte(hclText), 0o600); err != nil {
		t.Fatal(err)
	}
	if mc, diags = minion.LoadConfig(path, "", "", ""); diags.HasErrors() || mc.PublishPort != 14505 || mc.RequestPort != 24506 || mc.Master != "10.213.0.1" {
		t.Fatalf("minion config with ports %+v %v from\n%s", mc, diags, hclText)
	}
	// Under systemd the minion runs from the unit the .deb ships, byte for byte.
	shipped, err := os.ReadFile("../dist/systemd/brine-minion.service")
	if err != nil {
		t.Fatal(err)
	}
	if cloud.MinionUnit != string(shipped) {
		t.Fatalf("cloud.MinionUnit differs from dist/systemd/brine-minion.service:\n%s", cloud.MinionUnit)
	}
	if !strings.Contains(ud, "<<'BRINE_UNIT_EOF'\n"+string(shipped)+"BRINE_UNIT_EOF\n") {
		t.Fatalf("the user data does not install the shipped unit:\n%s", ud)
	}
	// Nothing a caller passes reaches the shell unquoted: hostile values are refused.
	hostile := []cloud.UserDataParams{
		{Bootstrap: info, MinionID: "web-1", Token: "x'; rm -rf / #"},
		{Bootstrap: info, MinionID: "web-1", Token: "$(reboot)"},
		{Bootstrap: info, MinionID: "web-1", Token: "a\nBRINE_MINION_EOF\nreboot"},
		{Bootstrap: cloud.BootstrapInfo{BinaryURL: "file:///etc/passwd", SHA256: info.SHA256, MasterAddr: "m", MasterFingerprint: "f"}, MinionID: "w", Token: "t"},
		{Bootstrap: cloud.BootstrapInfo{BinaryURL: info.BinaryURL, SHA256: "abc", MasterAddr: "m", MasterFingerprint: "f"}, MinionID: "w", Token: "t"},
		{Bootstrap: info, MinionID: "../etc", Token: "t"},
		{Bootstrap: info, MinionID: "w", Token: "t", Groups: []string{"a b"}},
		{Bootstrap: cloud.BootstrapInfo{BinaryURL: info.BinaryURL, SHA256: info.SHA256, MasterAddr: "m", MasterFingerprint: "f", PublishPort: 4505}, MinionID: "w", Token: "t"},
	}
	for i, p := range hostile {
		if _, err := cloud.UserData(p); err == nil {
			t.Fatalf("hostile input %d accepted", i)
		}
	}
}
