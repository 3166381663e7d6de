package minion

import (
	"encoding/json"
	"reflect"
	"slices"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/brinecm/brine/internal/wire"
)

// readMeta reads what the full decoding of a job's meta reads, for the minion it is meant for:
// every field, Peers' numbers as json.Number, its own groups and secrets; and it finds the
// minion among the job's minions exactly as slices.Contains would, escapes included.
func TestReadMetaMatchesTheFullDecoding(t *testing.T) {
	base := wire.JobMeta{
		JID: "20261202064907366676-d52d01", Kind: wire.JobApply, Target: "group:web",
		IssuedAt: time.Unix(1_800_000_000, 0).UTC(), ExpiresAt: time.Unix(1_800_003_600, 0).UTC(),
		BundleDigest: "abc", Vars: map[string]string{"a": "b"},
		Peers:   map[string][]map[string]any{"group:db": {{"id": "db1", "port": json.Number("3306"), "ipv4": []any{"10.0.0.5"}}}},
		Groups:  map[string][]string{"web1": {"web"}, "web2": {"web", "edge"}},
		Secrets: map[string][]byte{"web1": []byte("sealed-1"), "web2": []byte("sealed-2")},
	}
	for _, tc := range []struct {
		name    string
		minions []string
		raw     string // replaces the encoded minions when set
	}{
		{name: "first", minions: []string{"web1", "web2", "web3"}},
		{name: "last", minions: []string{"web3", "web2", "web1"}},
		{name: "absent", minions: []string{"web10", "xweb1", "web"}},
		{name: "alone", minions: []string{"web1"}},
		{name: "empty", minions: []string{}},
		{name: "null", minions: nil},
		{name: "escaped", raw: `[ "a\"web1", "w\u0065b1" ]`},
		{name: "escaped quote then id", raw: `["a\"web1\""]`},
		{name: "spaces", raw: "[ \"web2\" ,\n\t\"web1\" ]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := base
			m.Minions = tc.minions
			raw, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			if tc.raw != "" {
				var obj map[string]json.RawMessage
				json.Unmarshal(raw, &obj)
				obj["minions"] = json.RawMessage(tc.raw)
				raw, _ = json.Marshal(obj)
			}
			var full wire.JobMeta
			if err := wire.Unmarshal(raw, wire.MaxJobFrame, &full); err != nil {
				t.Fatal(err)
			}
			got, addressed, err := readMeta(raw, "web1")
			if err != nil {
				t.Fatal(err)
			}
			if want := slices.Contains(full.Minions, "web1"); addressed != want {
				t.Fatalf("addressed %v, want %v (minions %q)", addressed, want, full.Minions)
			}
			if !addressed {
				return
			}
			full.Minions = []string{"web1"}
			if !reflect.DeepEqual(got, full) {
				t.Fatalf("readMeta:\n%#v\nwant\n%#v", got, full)
			}
		})
	}
}

// Minions that are not a list of strings are refused, not read as "not addressed" by accident
// of the scan.
func TestReadMetaRefusesOtherMinions(t *testing.T) {
	for _, raw := range []string{`{"minions":"web1"}`, `{"minions":[1,"web1"]}`, `{"minions":{"web1":true}}`, `{"minions":["web2",["web1"]]}`} {
		if _, _, err := readMeta([]byte(raw), "web1"); err == nil {
			t.Errorf("%s: read", raw)
		}
	}
}

// inArray agrees with decoding the list in full, on any list of strings json.Unmarshal takes.
func FuzzInArray(f *testing.F) {
	for _, s := range []string{`["web1"]`, `[]`, `null`, `["a\"web1"]`, `["w\u0065b1","x"]`, ` [ "web2" , "web1" ] `, `["web1\\"]`, `["\\\"web1"]`, "null \n"} {
		f.Add(s, "web1")
	}
	f.Fuzz(func(t *testing.T, raw, id string) {
		if !utf8.ValidString(raw) {
			return // encoding/json reads invalid UTF-8 as U+FFFD; an id is ASCII
		}
		var ids []string
		if err := json.Unmarshal([]byte(raw), &ids); err != nil {
			return
		}
		got, err := inArray([]byte(raw), id)
		if err != nil {
			t.Fatalf("inArray(%q, %q): %v", raw, id, err)
		}
		if want := slices.Contains(ids, id); got != want {
			t.Fatalf("inArray(%q, %q) = %v, want %v", raw, id, got, want)
		}
	})
}
