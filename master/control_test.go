package master_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/brinecm/brine/control"
	"github.com/brinecm/brine/master"
)

// Invariant 7: the control socket is 0600 and is the only way in; the client drives a job.
func TestControlSocket(t *testing.T) {
	m := master.TestMaster(t)
	st, err := os.Stat(m.Config().ControlSocket)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 || st.Mode()&os.ModeSocket == 0 {
		t.Fatalf("control socket mode %v", st.Mode())
	}
	acceptedMinion(t, m, "c1", []string{"app"})
	cl := m.Client()
	ctx := context.Background()
	var events []string
	err = cl.Ping(ctx, control.PingRequest{Target: "group:app", Timeout: 5 * time.Second}, func(ev control.Event) {
		events = append(events, ev.Event)
	})
	if err != nil || len(events) != 3 || events[0] != "published" || events[1] != "return" || events[2] != "done" {
		t.Fatalf("ping over control: %v %v", events, err)
	}
	r, err := cl.KeyList(ctx, control.KeyListRequest{})
	if err != nil || len(r.Keys) != 1 || r.MasterFinger != m.Key().Fingerprint() {
		t.Fatalf("key list: %+v %v", r, err)
	}
	f, err := cl.Facts(ctx, control.FactsRequest{Target: "c1"})
	if err != nil || f.Facts["c1"]["os"] != "linux" {
		t.Fatalf("facts: %+v %v", f.Facts, err)
	}
	if err := cl.Ping(ctx, control.PingRequest{Target: "nobody"}, nil); err == nil {
		t.Fatal("empty target did not fail")
	}
	bogus := control.Op[control.None, control.None]{Name: "bogus"}
	if _, err := control.Call(ctx, cl, bogus, control.None{}, nil); err == nil || !strings.Contains(err.Error(), `unknown control op "bogus"`) {
		t.Fatalf("unknown op: %v", err)
	}
	// Deleting a key ends its session, and with it its session key.
	if _, ok := m.SessionKeyID("c1"); !ok {
		t.Fatal("c1 has no session")
	}
	if r, err := cl.KeyDelete(ctx, control.KeyRequest{Glob: "c1"}); err != nil || len(r.IDs) != 1 {
		t.Fatalf("delete: %+v %v", r, err)
	}
	if _, ok := m.SessionKeyID("c1"); ok {
		t.Fatal("delete did not end the session")
	}
	if m.Facts("c1") != nil {
		t.Fatal("deleted minion's facts kept")
	}
}
