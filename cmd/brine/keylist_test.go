package main

import (
	"strings"
	"testing"

	"github.com/brinecm/brine/master"
	"github.com/brinecm/brine/pki"
)

// brine key list GLOB lists only the keys whose id matches; a bad pattern is an error.
func TestKeyListFilters(t *testing.T) {
	m := master.TestMaster(t)
	sock := m.Client().Path
	for _, id := range []string{"web1", "web2", "db1"} {
		k, _ := pki.GenerateKeyPair()
		if _, err := m.Keys().Present(pki.Presentation{ID: id, Key: k.Pub, Source: "192.0.2.7"}, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	out, stderr, code := brine(t, "key", "list", "web*", "--socket", sock)
	if code != 0 || !strings.Contains(out, "web1") || !strings.Contains(out, "web2") || strings.Contains(out, "db1") {
		t.Fatalf("key list web*: exit %d\n%s%s", code, out, stderr)
	}
	out, _, code = brine(t, "key", "list", "--socket", sock)
	if code != 0 || strings.Count(out, "pending") != 3 {
		t.Fatalf("key list: exit %d\n%s", code, out)
	}
	if _, stderr, code = brine(t, "key", "list", "[web", "--socket", sock); code != 1 || !strings.Contains(stderr, "bad key pattern") {
		t.Fatalf("key list [web: exit %d %s", code, stderr)
	}
}
