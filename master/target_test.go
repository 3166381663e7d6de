package master

import (
	"strings"
	"testing"
)

func TestTargets(t *testing.T) {
	ms := []MinionInfo{
		{ID: "web1", Groups: []string{"app"}, Facts: map[string]any{"os": "debian", "net": map[string]any{"dc": "ams3"}, "ipv4": []any{"10.0.0.1"}}},
		{ID: "web2", Groups: []string{"app", "canary"}, Facts: map[string]any{"os": "ubuntu"}},
		{ID: "db1", Groups: []string{"db"}, Facts: map[string]any{"os": "debian", "cpus": 4}},
	}
	for _, tc := range []struct{ target, want string }{
		{"*", "db1,web1,web2"},
		{"web*", "web1,web2"},
		{"web1,db1", "db1,web1"},
		{"group:app", "web1,web2"},
		{"group:ca*", "web2"},
		{"fact:os=debian", "db1,web1"},
		{"fact:net.dc=ams*", "web1"},
		{"fact:ipv4=10.0.*", "web1"},
		{"fact:cpus=4", "db1"},
		{"group:app and not group:canary", "web1"},
		{"(group:app or group:db) and fact:os=debian", "db1,web1"},
		{"not (web* or db1)", ""},
		{"group:app or group:db and fact:os=ubuntu", "web1,web2"},
	} {
		tg, err := ParseTarget(tc.target)
		if err != nil {
			t.Fatalf("%q: %v", tc.target, err)
		}
		if got := strings.Join(Resolve(tg, ms), ","); got != tc.want {
			t.Errorf("%q = %q, want %q", tc.target, got, tc.want)
		}
	}
	for _, bad := range []string{"", "(web1", "web1)", "and", "not", "fact:os", "web1 or", "[", "a,,b"} {
		if _, err := ParseTarget(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func FuzzParseTarget(f *testing.F) {
	f.Add("(group:app or web*) and not fact:os=debian")
	f.Fuzz(func(t *testing.T, s string) {
		tg, err := ParseTarget(s)
		if err == nil {
			tg.Match(MinionInfo{ID: "x", Facts: map[string]any{"a": []any{1, "b"}}})
		}
	})
}
