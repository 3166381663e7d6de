package master

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/pki"
)

// openCopy opens a sealed copy as a minion would (job key, master signature) and returns its
// meta.
func openCopy(t *testing.T, m *Master, sj sealedJob) wire.JobMeta {
	t.Helper()
	signed, ok := sj.key.Open(sj.payload)
	if !ok {
		t.Fatal("copy does not decrypt")
	}
	content, ok := pki.OpenAttached(m.key.Pub.Sign, signed)
	if !ok {
		t.Fatal("copy is not signed by the master key")
	}
	metaJSON, _, err := wire.UnpackJob(content)
	if err != nil {
		t.Fatal(err)
	}
	var meta wire.JobMeta
	if err := json.Unmarshal(metaJSON, &meta); err != nil {
		t.Fatal(err)
	}
	return meta
}

// A master that delivers or resends a job another master published (the signed job from the
// store names all its minions) makes the copies its publisher made: each minion of a job of
// hundreds is sent a copy naming its bucket's minions only, with their groups and secrets only,
// not the list of all of them (every minion decoded the whole list: O(N^2) per ping).
func TestCopiesOfStoredJobSplitByBucket(t *testing.T) {
	m := TestMaster(t)
	const n = 500
	meta := wire.JobMeta{JID: NewJID(), Kind: wire.JobPing, Target: "*", IssuedAt: time.Now(), ExpiresAt: time.Now().Add(time.Minute),
		Groups: map[string][]string{}, Secrets: map[string][]byte{}}
	for i := range n {
		id := fmt.Sprintf("m%04d", i)
		meta.Minions = append(meta.Minions, id)
		meta.Groups[id] = []string{"g" + id}
		meta.Secrets[id] = []byte("s" + id)
	}
	_, _, signed, err := m.sealJobCopies(meta, nil)
	if err != nil {
		t.Fatal(err)
	}
	k := pki.NewJobKey()
	if whole := openCopy(t, m, sealedJob{key: k, payload: k.Seal(signed)}); len(whole.Minions) != n {
		t.Fatalf("the stored job names %d minions, want %d", len(whole.Minions), n)
	}
	got, copies, frames, err := m.copiesOfSigned(signed)
	if err != nil || got.JID != meta.JID || len(got.Minions) != n {
		t.Fatalf("copies of the stored job: %s, %d minions, %v", got.JID, len(got.Minions), err)
	}
	if len(copies) < 2 || len(frames) != len(copies) {
		t.Fatalf("%d copies, %d frames for %d minions: not split by bucket", len(copies), len(frames), n)
	}
	seen := 0
	for _, f := range frames {
		cm := openCopy(t, m, copies[f.copy])
		if f.topic != wire.TopicBucket(wire.BucketOf(f.minions[0])) || !slices.Equal(cm.Minions, f.minions) || cm.JID != meta.JID {
			t.Fatalf("frame on %q carries a copy naming %d minions, its frame %d", f.topic, len(cm.Minions), len(f.minions))
		}
		for _, id := range f.minions {
			if wire.TopicBucket(wire.BucketOf(id)) != f.topic || len(cm.Groups[id]) != 1 || string(cm.Secrets[id]) != "s"+id {
				t.Fatalf("%s in the frame on %q: groups %v, secret %q", id, f.topic, cm.Groups[id], cm.Secrets[id])
			}
		}
		if len(cm.Groups) != len(f.minions) || len(cm.Secrets) != len(f.minions) {
			t.Fatalf("a bucket's copy holds %d minions' groups and %d secrets for %d minions", len(cm.Groups), len(cm.Secrets), len(f.minions))
		}
		seen += len(f.minions)
	}
	if seen != n {
		t.Fatalf("frames name %d minions, want %d", seen, n)
	}
	// A resend on a master without copies: the minion gets its bucket's copy, and the copies
	// made for it serve the job's other minions.
	var c sealedCopies
	sj, err := c.forMinion(meta.JID, "m0007", signed, m.copiesOfSigned)
	if err != nil {
		t.Fatal(err)
	}
	cm := openCopy(t, m, sj)
	if !slices.Contains(cm.Minions, "m0007") || len(cm.Minions) >= n/4 {
		t.Fatalf("the resent copy names %d minions", len(cm.Minions))
	}
	other, err := c.forMinion(meta.JID, "m0400", signed, func([]byte) (wire.JobMeta, []sealedJob, []jobFrame, error) {
		t.Fatal("copies made again for a job whose copies are kept")
		return wire.JobMeta{}, nil, nil, nil
	})
	if err != nil || !slices.Contains(openCopy(t, m, other).Minions, "m0400") {
		t.Fatalf("the kept copies do not serve m0400: %v", err)
	}
	if _, err := c.forMinion(meta.JID, "stranger", signed, m.copiesOfSigned); err == nil {
		t.Fatal("a copy for a minion the job does not address")
	}
}
