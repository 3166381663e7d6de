package capture

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSplitCommonAndPerHost(t *testing.T) {
	pkgs := "# Packages.\nvariable \"packages\" {\n  default = { nginx = \"1.0\" }\n}\n\npackage \"manual\" {\n  for_each = var.packages\n}\n"
	hosts := map[string]map[string][]byte{
		"web1": {
			"packages.hcl":  []byte(pkgs),
			"files.hcl":     []byte("# Files.\n\n# shared\nfile \"/etc/a\" {\n  source = \"files/etc/a\"\n}\n\nfile \"/etc/b\" {\n  source = \"files/etc/b\"\n}\n"),
			"files/etc/a":   []byte("same\n"),
			"files/etc/b":   []byte("web1's\n"),
			"variables.hcl": []byte("variable \"hostname\" {\n  description = \"captured on web1\"\n}\n"),
			"README.md":     []byte("web1\n"),
		},
		"web2": {
			"packages.hcl":  []byte(pkgs),
			"files.hcl":     []byte("# Files.\n\n# shared\nfile \"/etc/a\" {\n  source = \"files/etc/a\"\n}\n\nfile \"/etc/b\" {\n  source = \"files/etc/b\"\n}\n"),
			"files/etc/a":   []byte("same\n"),
			"files/etc/b":   []byte("web2's\n"),
			"variables.hcl": []byte("variable \"hostname\" {\n  description = \"captured on web2\"\n}\n"),
			"README.md":     []byte("web2\n"),
		},
	}
	out, err := Split(hosts, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"common/packages.hcl": pkgs,
		"common/files.hcl":    "# Files.\n\n# shared\nfile \"/etc/a\" {\n  source = \"files/etc/a\"\n}\n",
		"common/files/etc/a":  "same\n",
		"web1/files.hcl":      "file \"/etc/b\" {\n  source = \"files/etc/b\"\n}\n",
		"web1/files/etc/b":    "web1's\n",
		"web2/files/etc/b":    "web2's\n",
		"web1/variables.hcl":  "variable \"hostname\" {\n  description = \"captured on web1\"\n}\n",
		"web2/README.md":      "web2\n",
		"site.hcl": "# Written by `brine capture`: each captured host gets the bundle of what all of them share,\n" +
			"# those of what the captured hosts of its groups share, and the bundle of its own differences.\n# Review them before converging.\n\n" +
			"assign \"web1,web2\" { bundles = [\"common\"] }\n\nassign \"web1\" { bundles = [\"web1\"] }\nassign \"web2\" { bundles = [\"web2\"] }\n",
	}
	for p, w := range want {
		if got := string(out[p]); got != w {
			t.Errorf("%s:\n%s\nwant:\n%s", p, got, w)
		}
	}
	for _, p := range []string{"web1/packages.hcl", "web1/files/etc/a", "common/files/etc/b", "common/variables.hcl"} {
		if _, ok := out[p]; ok {
			t.Errorf("%s should not be in the split", p)
		}
	}

	// One host: everything is its own.
	out, err = Split(map[string]map[string][]byte{"web1": hosts["web1"]}, nil)
	if err != nil || string(out["web1/packages.hcl"]) != pkgs || out["common/packages.hcl"] != nil || strings.Contains(string(out["site.hcl"]), "common") {
		t.Fatalf("one host: %v %q", err, out["site.hcl"])
	}
	if _, err := Split(map[string]map[string][]byte{"common": hosts["web1"], "web2": hosts["web2"]}, nil); err == nil {
		t.Fatal("a minion named common was accepted")
	}
}

// What minions send is written only if every path stays inside the directory and no file holds
// a private key: otherwise nothing is written.
func TestWriteFilesRefusesHostileCaptures(t *testing.T) {
	key := "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
	for name, files := range map[string]map[string][]byte{
		"escape":   {"ok.hcl": []byte("x"), "../evil": []byte("x")},
		"absolute": {"/etc/evil": []byte("x")},
		"nul":      {"a\x00b": []byte("x")},
		"key":      {"ok.hcl": []byte("x"), "web1/files/etc/k": []byte(key)},
	} {
		dir := filepath.Join(t.TempDir(), "out")
		if err := WriteFiles(dir, files); err == nil {
			t.Errorf("%s: written", name)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("%s: %s was made", name, dir)
		}
	}
}

// Three hosts, two of them in group web: what both web hosts hold and db does not goes to
// group-web, once, assigned to the two by id; what all hold to common; the rest stays.
func TestSplitGroups(t *testing.T) {
	host := func(site, role string) map[string][]byte {
		return map[string][]byte{
			"files.hcl": []byte("file \"/etc/motd\" {\n  content = \"hello\"\n}\n\nfile \"/etc/site\" {\n  content = \"" + site + "\"\n}\n\nfile \"/etc/role\" {\n  content = \"" + role + "\"\n}\n"),
		}
	}
	hosts := map[string]map[string][]byte{"web1": host("a", "web"), "web2": host("b", "web"), "db1": host("c", "db")}
	groups := map[string][]string{"web1": {"web", "all"}, "web2": {"web", "all"}, "db1": {"all", "db"}}
	out, err := Split(hosts, groups)
	if err != nil {
		t.Fatal(err)
	}
	for p, w := range map[string]string{
		"common/files.hcl":    "file \"/etc/motd\" {\n  content = \"hello\"\n}\n",
		"group-web/files.hcl": "file \"/etc/role\" {\n  content = \"web\"\n}\n",
		"web1/files.hcl":      "file \"/etc/site\" {\n  content = \"a\"\n}\n",
		"db1/files.hcl":       "file \"/etc/site\" {\n  content = \"c\"\n}\n\nfile \"/etc/role\" {\n  content = \"db\"\n}\n",
	} {
		if got := string(out[p]); got != w {
			t.Errorf("%s:\n%s\nwant:\n%s", p, got, w)
		}
	}
	site := string(out["site.hcl"])
	for _, w := range []string{`assign "db1,web1,web2" { bundles = ["common"] }`, `assign "web1,web2" { bundles = ["group-web"] }`,
		`assign "db1" { bundles = ["db1"] }`, `assign "web2" { bundles = ["web2"] }`} {
		if !strings.Contains(site, w) {
			t.Errorf("site.hcl lacks %s:\n%s", w, site)
		}
	}
	if _, ok := out["group-all/files.hcl"]; ok || strings.Contains(site, "group-db") {
		t.Errorf("a group of every host or of one host has a bundle:\n%s", site)
	}
}
