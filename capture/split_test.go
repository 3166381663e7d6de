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
	out, err := Split(hosts, nil, nil)
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
	out, err = Split(map[string]map[string][]byte{"web1": hosts["web1"]}, nil, nil)
	if err != nil || string(out["web1/packages.hcl"]) != pkgs || out["common/packages.hcl"] != nil || strings.Contains(string(out["site.hcl"]), "common") {
		t.Fatalf("one host: %v %q", err, out["site.hcl"])
	}
	if _, err := Split(map[string]map[string][]byte{"common": hosts["web1"], "web2": hosts["web2"]}, nil, nil); err == nil {
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
	out, err := Split(hosts, groups, nil)
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

// Captures added to an existing site: its groups and assigns stay, word for word, with the
// captured bundles' assigns after them; its bundles are in the tree unchanged; a captured
// bundle that would take the name of one of the site's is refused.
func TestSplitIntoSite(t *testing.T) {
	host := func(own string) map[string][]byte {
		return map[string][]byte{"files.hcl": []byte("file \"/etc/motd\" {\n  content = \"hello\"\n}\n\nfile \"/etc/own\" {\n  content = \"" + own + "\"\n}\n\nfile \"/etc/tier\" {\n  content = \"back\"\n}\n")}
	}
	hosts := map[string]map[string][]byte{"app1": host("a"), "app2": host("b"), "web1": host("c")}
	hosts["web1"]["files.hcl"] = []byte(strings.Replace(string(hosts["web1"]["files.hcl"]), "back", "front", 1))
	siteText := "group \"back\" { target = \"app* or fact:role=app\" }\n\nassign \"group:back\" { bundles = [\"monitoring\"] }\n"
	site := map[string][]byte{"site.hcl": []byte(siteText), "monitoring/files.hcl": []byte("file \"/etc/mon\" {\n  content = \"x\"\n}\n")}
	// The groups as the master resolves them: key groups, then site groups.
	groups := map[string][]string{"app1": {"legacy", "back"}, "app2": {"legacy", "back"}, "web1": {"legacy"}}
	out, err := Split(hosts, groups, site)
	if err != nil {
		t.Fatal(err)
	}
	got := string(out["site.hcl"])
	if !strings.HasPrefix(got, siteText+"\n# Added by `brine capture`") {
		t.Errorf("site.hcl does not keep the site's text first:\n%s", got)
	}
	for _, w := range []string{`assign "app1,app2,web1" { bundles = ["common"] }`, `assign "app1,app2" { bundles = ["group-back"] }`, `assign "web1" { bundles = ["web1"] }`} {
		if !strings.Contains(got, w) {
			t.Errorf("site.hcl lacks %s:\n%s", w, got)
		}
	}
	if string(out["group-back/files.hcl"]) != "file \"/etc/tier\" {\n  content = \"back\"\n}\n" || string(out["monitoring/files.hcl"]) != string(site["monitoring/files.hcl"]) {
		t.Errorf("group-back/files.hcl:\n%s\nmonitoring/files.hcl:\n%s", out["group-back/files.hcl"], out["monitoring/files.hcl"])
	}
	for _, taken := range []string{"common/x.hcl", "group-back/x.hcl", "web1/x.hcl", "web1"} {
		s := map[string][]byte{"site.hcl": []byte(siteText), taken: []byte("x")}
		if _, err := Split(hosts, groups, s); err == nil || !strings.Contains(err.Error(), "already has "+strings.Split(taken, "/")[0]) {
			t.Errorf("a site with %s: %v", taken, err)
		}
	}
}

// WriteInto adds the new files of a tree to the site directory it was split into and replaces
// site.hcl last; it never overwrites a file the site has, and refuses what WriteFiles refuses
// before anything is written.
func TestWriteInto(t *testing.T) {
	dir := t.TempDir()
	old := map[string][]byte{"site.hcl": []byte("group \"g\" { target = \"a*\" }\n"), "base/a.hcl": []byte("# base\n")}
	if err := WriteFiles(filepath.Join(dir, "s"), old); err != nil {
		t.Fatal(err)
	}
	dir = filepath.Join(dir, "s")
	tree := map[string][]byte{"site.hcl": []byte("new site\n"), "base/a.hcl": old["base/a.hcl"], "a1/files.hcl": []byte("# a1\n")}
	if err := WriteInto(dir, tree, old); err != nil {
		t.Fatal(err)
	}
	for p, w := range tree {
		if b, err := os.ReadFile(filepath.Join(dir, p)); err != nil || string(b) != string(w) {
			t.Errorf("%s: %q %v, want %q", p, b, err, w)
		}
	}
	// a1/files.hcl exists now: a second write of it is refused, and site.hcl is left as it is.
	if err := WriteInto(dir, map[string][]byte{"site.hcl": []byte("third\n"), "a1/files.hcl": []byte("# other\n")}, old); err == nil {
		t.Error("an existing file was overwritten")
	}
	key := "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
	for name, files := range map[string]map[string][]byte{
		"escape": {"site.hcl": []byte("x"), "../evil": []byte("x")},
		"key":    {"site.hcl": []byte("x"), "a2/files/etc/k": []byte(key)},
		"nosite": {"a2/files.hcl": []byte("x")},
	} {
		if err := WriteInto(dir, files, old); err == nil {
			t.Errorf("%s: written", name)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "site.hcl")); string(b) != "new site\n" {
		t.Errorf("site.hcl after refused writes: %q", b)
	}
	if _, err := os.Stat(filepath.Join(dir, "a2")); !os.IsNotExist(err) {
		t.Errorf("a refused write made a2: %v", err)
	}
}
