package master_test

import (
	"strings"
	"testing"

	"github.com/brinecm/brine/master"
	"github.com/brinecm/brine/states"
)

func siteOf(t *testing.T, files map[string]string) (*master.Site, string) {
	t.Helper()
	b := &states.Bundle{Files: map[string][]byte{}, Root: "st"}
	for k, v := range files {
		b.Files[k] = []byte(v)
	}
	s, diags := master.LoadSite(b, true)
	var msgs []string
	for _, d := range diags {
		msgs = append(msgs, d.Error())
	}
	return s, strings.Join(msgs, "\n")
}

// Site groups: evaluated in order over key groups, earlier site groups and facts; a group may
// not use a later one; assign targets and bundle names are checked with positions.
func TestSiteGroupsAndAssignments(t *testing.T) {
	s, errs := siteOf(t, map[string]string{
		"site.hcl": `group "web" { target = "web*" }
group "front" { target = "group:web or group:lb" }
group "claimed" { target = "fact:role=db" }
assign "group:front" { bundles = ["base", "web"] }
assign "web1" { bundles = ["web", "extra"] }
`,
		"base/main.hcl": "", "web/main.hcl": "", "extra/main.hcl": "",
	})
	if errs != "" {
		t.Fatal(errs)
	}
	for _, c := range []struct {
		mi      master.MinionInfo
		groups  string
		bundles string
	}{
		{master.MinionInfo{ID: "web1"}, "web,front", "base,extra,web"},
		{master.MinionInfo{ID: "lb1", Groups: []string{"lb"}}, "lb,front", "base,web"},
		{master.MinionInfo{ID: "x", Facts: map[string]any{"role": "db"}}, "claimed", ""},
	} {
		g := s.GroupsOf(c.mi)
		if strings.Join(g, ",") != c.groups {
			t.Fatalf("%s: groups %v, want %s", c.mi.ID, g, c.groups)
		}
		b := s.BundlesOf(master.MinionInfo{ID: c.mi.ID, Groups: g, Facts: c.mi.Facts})
		if strings.Join(b, ",") != c.bundles {
			t.Fatalf("%s: bundles %v, want %s", c.mi.ID, b, c.bundles)
		}
	}
	_, errs = siteOf(t, map[string]string{
		"site.hcl": `group "a" { target = "group:b" }
group "b" { target = "w* and" }
assign "(web" { bundles = ["base"] }
assign "*" { bundles = ["nope"] }
`,
		"base/main.hcl": "",
	})
	for _, want := range []string{"st/site.hcl:1,22-31: Group refers to a later group", "st/site.hcl:2,22-30: Invalid group target",
		"st/site.hcl:3,8-14: Invalid assign target", `The site has no bundle "nope"`} {
		if !strings.Contains(errs, want) {
			t.Fatalf("diagnostics lack %q:\n%s", want, errs)
		}
	}
	if _, errs = siteOf(t, map[string]string{"base/main.hcl": ""}); !strings.Contains(errs, "st/site.hcl does not exist") {
		t.Fatalf("no site file: %s", errs)
	}
}
