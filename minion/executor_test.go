package minion

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/pki"
	"github.com/brinecm/brine/states"
)

// jobMaker signs and seals jobs as a master with key master would, for a minion holding sk.
type jobMaker struct {
	master *pki.KeyPair
	sk     *pki.SessionKey
}

// frame returns the body of a TJob frame: meta and bundle signed by signer, sealed under a job
// key wrapped for sk.
func (jm jobMaker) frame(t *testing.T, signer *pki.KeyPair, meta wire.JobMeta, bundle []byte) []byte {
	t.Helper()
	raw, err := json.Marshal(meta)
	if err != nil {
		t.Fatal(err)
	}
	nonce, jk := pki.RandomNonce(), pki.NewJobKey()
	f := wire.JobFrame(nonce, []wire.Wrap{{KeyID: jm.sk.ID, Key: jm.sk.Wrap(nonce, jk)}}, jk.Seal(signer.SignAttached(wire.PackJob(raw, bundle))))
	return f[wire.HeaderLen:]
}

// testMinion returns a minion in dir that pinned master's key and holds the session key sk, as
// after an authentication; no connection.
func testMinion(t *testing.T, dir, id string, master *pki.KeyPair, sk *pki.SessionKey) *Minion {
	t.Helper()
	m, err := New(Config{ID: id, DataDir: dir, Master: "127.0.0.1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.keys.pin(master.Pub); err != nil {
		t.Fatal(err)
	}
	m.keys.authenticated(sk, [8]byte{1})
	return m
}

// The executor refuses every job it must not run, and a job that passes carries its bundle
// unpacked from the bytes whose digest was checked.
func TestOpenJobRefusals(t *testing.T) {
	master, impostor := mustKey(t), mustKey(t)
	jm := jobMaker{master: master, sk: pki.NewSessionKey()}
	dir := t.TempDir()
	m := testMinion(t, dir, "web1", master, jm.sk)
	now := time.Now()
	b := &states.Bundle{Files: map[string][]byte{"main.hcl": []byte(`file "x" { path = "/tmp/x" }`)}}
	packed := b.Marshal()
	meta := func(jid string) wire.JobMeta {
		return wire.JobMeta{JID: jid, Kind: wire.JobApply, Minions: []string{"web1"}, IssuedAt: now,
			ExpiresAt: now.Add(time.Minute), BundleDigest: bundleDigest(packed)}
	}

	j, err := m.OpenJob(jm.frame(t, master, meta("ok"), packed), now)
	if err != nil {
		t.Fatal(err)
	}
	if j.bundle == nil || string(j.bundle.Files["main.hcl"]) != string(b.Files["main.hcl"]) || len(j.bundle.Files) != 1 {
		t.Fatalf("the accepted job's bundle: %+v", j.bundle)
	}
	if bundleDigest(packed) != b.Digest() {
		t.Fatal("the digest over the packed bytes is not the bundle's digest")
	}

	other := meta("other")
	other.Minions = []string{"web2"}
	expired := meta("expired")
	expired.ExpiresAt = now.Add(-time.Second)
	digest := meta("digest")
	digest.BundleDigest = bundleDigest(append([]byte("x"), packed...))
	notTar := []byte("not a tar stream, but signed, with its digest")
	badTar := meta("badtar")
	badTar.BundleDigest = bundleDigest(notTar)
	otherKey := jobMaker{master: master, sk: pki.NewSessionKey()}
	for _, c := range []struct {
		name string
		body []byte
		want error  // errors.Is, or
		text string // in the error
	}{
		{"bad signature", jm.frame(t, impostor, meta("forged"), packed), nil, "signature"},
		{"wrong recipient", jm.frame(t, master, other, nil), ErrNotForUs, ""},
		{"wrapped for another key", otherKey.frame(t, master, meta("otherkey"), packed), ErrNotForUs, ""},
		{"stale", jm.frame(t, master, expired, packed), ErrJobExpired, ""},
		{"replayed", jm.frame(t, master, meta("ok"), packed), ErrJobReplay, ""},
		{"digest", jm.frame(t, master, digest, packed), nil, "digest"},
		{"bundle", jm.frame(t, master, badTar, notTar), nil, "bundle"},
		{"garbage", []byte("garbage"), nil, ""},
	} {
		_, err := m.OpenJob(c.body, now)
		switch {
		case err == nil:
			t.Errorf("%s: accepted", c.name)
		case c.want != nil && !errors.Is(err, c.want):
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		case c.text != "" && !strings.Contains(err.Error(), c.text):
			t.Errorf("%s: %v, want it to say %q", c.name, err, c.text)
		}
	}
	// None of the refused jobs was recorded as seen: only "ok" was.
	for _, jid := range []string{"forged", "other", "expired", "digest", "badtar", "otherkey"} {
		if m.seen.has(jid) {
			t.Errorf("refused job %s recorded as seen", jid)
		}
	}
	// The replay is refused after a restart too (the seen record is on disk).
	again := testMinion(t, dir, "web1", master, jm.sk)
	if _, err := again.OpenJob(jm.frame(t, master, meta("ok"), packed), now); !errors.Is(err, ErrJobReplay) {
		t.Fatalf("replay after restart: %v", err)
	}
}

// BenchmarkBundleVerify measures what a minion does with an apply's bundle between receiving it
// and compiling it: "retar", as before (unpack, pack again to compute the digest, unpack again to
// run), and "bytes", as now (the digest of the bytes received, one unpack).
func BenchmarkBundleVerify(b *testing.B) {
	for _, size := range []struct {
		name         string
		files, bytes int
	}{{"20x1KB", 20, 1 << 10}, {"200x16KB", 200, 16 << 10}} {
		bundle := &states.Bundle{Files: map[string][]byte{}}
		for i := range size.files {
			bundle.Files[fmt.Sprintf("f%03d.hcl", i)] = []byte(strings.Repeat("# x\n", size.bytes/4))
		}
		packed, digest := bundle.Marshal(), bundle.Digest()
		b.Run(size.name+"/retar", func(b *testing.B) {
			b.SetBytes(int64(len(packed)))
			for b.Loop() {
				bb, err := states.UnmarshalBundle(packed)
				if err != nil || bb.Digest() != digest {
					b.Fatal("digest")
				}
				if _, err := states.UnmarshalBundle(packed); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(size.name+"/bytes", func(b *testing.B) {
			b.SetBytes(int64(len(packed)))
			for b.Loop() {
				if bundleDigest(packed) != digest {
					b.Fatal("digest")
				}
				if _, err := states.UnmarshalBundle(packed); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
