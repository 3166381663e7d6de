package master_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/master"
	"github.com/brinecm/brine/states"
)

// A site group whose target is a claim (fact:role=db) takes in a compromised minion that claims
// role=db: peers("group:db") lists it, as the site's documentation warns. But its peers() entry
// must not say that the operator put it there: `groups` holds only the groups it is in without
// its facts (key groups and site groups of ids and key groups), and the groups it is in through
// its facts are its `claimed_groups`. Before, `groups` held them all, and a bundle that trusted
// p.groups (as docs/states.md advised) trusted a claim.
func TestSiteGroupsFromClaimsAreClaimed(t *testing.T) {
	m := master.TestMaster(t)
	acceptedMinion(t, m, "web1", []string{"web"})
	acceptedMinion(t, m, "db1", []string{"dbkey"})
	evil := evilMinion(t, m, "evil", nil, nil)
	if r, _, ok := evil.request(wire.KindFacts, map[string]any{"os": "debian", "role": "db", "groups": []any{"dbkey"}, "claimed_groups": []any{}}); !ok || !r.OK {
		t.Fatalf("the evil minion's facts were refused: %+v", r)
	}
	site, errs := siteOf(t, map[string]string{
		"site.hcl": `group "db" { target = "group:dbkey or fact:role=db" }
group "dbs" { target = "group:db" }
group "back" { target = "fact:id=db1 or fact:groups=dbkey" }
`,
	})
	if errs != "" {
		t.Fatal(errs)
	}
	b := bundle(t, map[string]string{"main.hcl": `
variable "root" {
  type = string
}

file "db" {
  path    = "${var.root}/db"
  content = join("", [for p in peers("group:db") : "${p.id} groups=${join(",", p.groups)} claimed=${join(",", p.claimed_groups)}\n"])
}
`})
	res := run(t, m, master.JobSpec{Target: "web1", Minions: []string{"web1"}, Bundle: b, Site: site, DryRun: true, Vars: map[string]string{"root": t.TempDir()}})
	var rep states.Report
	if err := json.Unmarshal(res.Returns["web1"].Report, &rep); err != nil || len(rep.Results) != 1 {
		t.Fatalf("web1's plan: %v %+v", err, res.Returns["web1"])
	}
	// brine status shows which groups are claims.
	st, err := m.Status(context.Background(), "evil,db1", site)
	if err != nil || len(st) != 2 {
		t.Fatalf("status: %v %+v", err, st)
	}
	for _, s := range st {
		want := map[string]string{"db1": "", "evil": "db,dbs"}[s.ID]
		if got := strings.Join(s.ClaimedGroups, ","); got != want {
			t.Errorf("status of %s: claimed groups %q, want %q (groups %v)", s.ID, got, want, s.Groups)
		}
	}
	d := rep.Results[0].Diff
	for _, want := range []string{"+db1 groups=dbkey,db,dbs,back claimed=\n", "+evil groups= claimed=db,dbs"} {
		if !strings.Contains(d, want) {
			t.Errorf("web1's plan lacks %q:\n%s", want, d)
		}
	}
}
