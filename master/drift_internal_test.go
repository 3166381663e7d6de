package master

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/states"
)

// A drift record made from a minion's return is bounded whatever the return holds: at most
// maxDriftChanges resources, maxDriftDiff of each diff and of the error; the id is the session's,
// not the one the return names.
func TestDriftRecordBounds(t *testing.T) {
	var rep states.Report
	for i := range 5000 {
		rep.Results = append(rep.Results, states.Result{Address: fmt.Sprintf("file.f%d", i), Status: states.StatusChanged,
			Diff: strings.Repeat("\x1b[2J", 10000)})
	}
	raw, _ := json.Marshal(rep)
	r := driftRecord("watch", "web1", wire.Return{Minion: "someone-else", JID: "j", Report: raw, Error: strings.Repeat("e", 1<<20)})
	if r.Minion != "web1" || !r.Drifted || len(r.Changes) != maxDriftChanges {
		t.Fatalf("record: minion %s, drifted %v, %d changes", r.Minion, r.Drifted, len(r.Changes))
	}
	for _, c := range r.Changes {
		if len(c.Diff) > maxDriftDiff+64 {
			t.Fatalf("a diff of %d bytes kept", len(c.Diff))
		}
	}
	if len(r.Error) > maxDriftDiff+64 {
		t.Fatalf("an error of %d bytes kept", len(r.Error))
	}
	// A report that is not JSON is no drift (and no crash).
	if r := driftRecord("watch", "web1", wire.Return{Report: []byte("{nope")}); r.Drifted || len(r.Changes) != 0 {
		t.Fatalf("bad report: %+v", r)
	}
}
