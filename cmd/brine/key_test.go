package main

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/brinecm/brine/control"
	"github.com/brinecm/brine/internal/pgtest"
	"github.com/brinecm/brine/master"
	"github.com/brinecm/brine/minion"
	"github.com/brinecm/brine/pki"
)

// brine key list and accept show what the operator accepts: fingerprint, source, age; accept
// --finger accepts only the key checked; requested groups are shown as not granted.
func TestKeyListAndAcceptShowTheKey(t *testing.T) {
	m := master.TestMaster(t)
	sock := m.Client().Path
	k, _ := pki.GenerateKeyPair()
	other, _ := pki.GenerateKeyPair()
	if _, err := m.Keys().Present(pki.Presentation{ID: "web1", Key: k.Pub, Source: "192.0.2.7", Requested: []string{"admin"}}, false, nil); err != nil {
		t.Fatal(err)
	}
	out, stderr, code := brine(t, "key", "list", "--socket", sock)
	if code != 0 || !strings.Contains(out, "web1") || !strings.Contains(out, k.Pub.Fingerprint()[:23]) ||
		!strings.Contains(out, "192.0.2.7") || !strings.Contains(out, "requested, not granted: admin") {
		t.Fatalf("key list: exit %d\n%s%s", code, out, stderr)
	}
	out, stderr, code = brine(t, "key", "accept", "web1", "--finger", other.Pub.Fingerprint(), "--socket", sock)
	if code != 1 || !strings.Contains(out, "no key matched") {
		t.Fatalf("accept with another fingerprint: exit %d\n%s%s", code, out, stderr)
	}
	out, stderr, code = brine(t, "key", "accept", "web1", "--finger", k.Pub.Fingerprint(), "--socket", sock)
	if code != 0 || !strings.Contains(out, "accepted web1") || !strings.Contains(out, k.Pub.Fingerprint()) ||
		!strings.Contains(out, "192.0.2.7") || !strings.Contains(stderr, "not granted") {
		t.Fatalf("accept: exit %d\n%s%s", code, out, stderr)
	}
	if rec, _ := m.Keys().Get("web1"); rec.State != pki.StateAccepted || len(rec.Groups) != 0 {
		t.Fatalf("web1: %+v", rec)
	}
	out, _, code = brine(t, "key", "token", "create", "--id", "web*", "--groups", "app", "--json", "--socket", sock)
	var tok struct{ Token string }
	if code != 0 || json.Unmarshal([]byte(out), &tok) != nil || !strings.HasPrefix(tok.Token, "brn2-"+strings.ReplaceAll(m.Key().Fingerprint(), ":", "")+"-") {
		t.Fatalf("token create: exit %d %s", code, out)
	}
	if ts, _ := m.Tokens().List(); len(ts) != 1 || ts[0].ID != "web*" {
		t.Fatalf("tokens: %+v", ts)
	}
	if _, stderr, code = brine(t, "key", "token", "create", "--id", "../x", "--socket", sock); code != 1 {
		t.Fatalf("token for a bad id pattern: exit %d %s", code, stderr)
	}
}

// The CLI refuses a control socket it cannot trust, with a clear error, before sending anything.
func TestCLIRefusesUntrustedSocket(t *testing.T) {
	m := master.TestMaster(t)
	dir, err := os.MkdirTemp("", "brcli")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	link := filepath.Join(dir, "link.sock")
	if err := os.Symlink(m.Client().Path, link); err != nil {
		t.Fatal(err)
	}
	open := filepath.Join(dir, "open")
	os.Mkdir(open, 0o700)
	os.Chmod(open, 0o777)
	l, err := net.Listen("unix", filepath.Join(open, "m.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, p := range []string{link, filepath.Join(open, "m.sock")} {
		_, stderr, code := brine(t, "key", "list", "--socket", p)
		if code != 1 || !strings.Contains(stderr, "untrusted control socket") {
			t.Fatalf("%s: exit %d\n%s", p, code, stderr)
		}
	}
	if _, stderr, code := brine(t, "key", "list", "--socket", m.Client().Path); code != 0 {
		t.Fatalf("the master's own socket: exit %d\n%s", code, stderr)
	}
}

// With masters sharing a store, brine key list and brine status say which master each minion
// is connected to when it is not the one asked.
func TestKeyListShowsTheMinionsMaster(t *testing.T) {
	url := pgtest.Shared(t).NewDatabase(t)
	m1 := master.TestMaster(t, func(c *master.Config) { c.Store = url })
	key, err := os.ReadFile(filepath.Join(m1.Config().DataDir, "master.key"))
	if err != nil {
		t.Fatal(err)
	}
	m2 := master.TestMaster(t, func(c *master.Config) {
		c.Store = url
		os.WriteFile(filepath.Join(c.DataDir, "master.key"), key, 0o600)
	})
	tok, _, err := m1.Tokens().Create(pki.TokenRequest{ID: "db1", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	mn := minion.TestMinion(t, m2.PublishAddr(), m2.RequestAddr(), "db1", func(c *minion.Config) { c.Token = tok })
	deadline := time.Now().Add(15 * time.Second)
	for mn.Status() != "connected" {
		if time.Now().After(deadline) {
			t.Fatalf("db1: %s", mn.Status())
		}
		time.Sleep(20 * time.Millisecond)
	}
	out, stderr, code := brine(t, "key", "list", "--socket", m1.Client().Path)
	if code != 0 || !strings.Contains(out, "connected to master "+m2.Name()) {
		t.Fatalf("key list on m1: exit %d\n%s%s", code, out, stderr)
	}
	out, _, _ = brine(t, "key", "list", "--socket", m2.Client().Path)
	if strings.Contains(out, "connected to master") {
		t.Fatalf("key list on m2 names m2:\n%s", out)
	}
	// brine status on m1 shows db1 connected, on m2.
	out, stderr, code = brine(t, "status", "--socket", m1.Client().Path)
	if code != 0 || !strings.Contains(out, "on "+m2.Name()) {
		t.Fatalf("status on m1: exit %d\n%s%s", code, out, stderr)
	}
	out, _, _ = brine(t, "status", "--json", "--socket", m1.Client().Path)
	var st control.StatusResponse
	if json.Unmarshal([]byte(out), &st) != nil || len(st.Minions) != 1 || !st.Minions[0].Connected || st.Minions[0].Master != m2.Name() ||
		st.Master != m1.Name() || st.Store == nil || st.Store.Kind != "postgres" || !st.Store.Up {
		t.Fatalf("status --json on m1: %s", out)
	}
}
