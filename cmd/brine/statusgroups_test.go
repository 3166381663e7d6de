package main

import (
	"testing"

	"github.com/brinecm/brine/control"
)

func TestStatusGroupsMarksClaims(t *testing.T) {
	s := control.MinionStatus{Groups: []string{"app", "db", "dbs"}, ClaimedGroups: []string{"db", "dbs"}}
	if got := statusGroups(s); got != "app,db(claim),dbs(claim)" {
		t.Fatalf("%q", got)
	}
	if got := statusGroups(control.MinionStatus{}); got != "" {
		t.Fatalf("%q", got)
	}
}
