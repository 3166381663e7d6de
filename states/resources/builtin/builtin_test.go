package builtin

import (
	"strings"
	"testing"
)

// The registry holds every type brine ships, each decodable, and nothing else.
func TestTypes(t *testing.T) {
	r := Types()
	want := "exec file iptables_chain iptables_rule package service tinc_network ufw"
	if got := strings.Join(r.Names(), " "); got != want {
		t.Fatalf("types %q, want %q", got, want)
	}
	for _, n := range r.Names() {
		if ty := r.Lookup(n); ty == nil || ty.Decode == nil || ty.Name != n {
			t.Errorf("type %s: %+v", n, ty)
		}
	}
	if r.Lookup("probe") != nil {
		t.Error("a type that is not shipped")
	}
	if r.Lookup("tinc_network").Facts == nil {
		t.Error("tinc_network reports no facts")
	}
}
