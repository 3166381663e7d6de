package recordlog

import (
	"os"
	"path/filepath"
	"testing"
)

func TestAppendReadRewrite(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.log")
	l, recs, st, err := Open(p)
	if err != nil || len(recs) != 0 || st != (Stats{}) {
		t.Fatal(recs, st, err)
	}
	defer l.Close()
	var offs []int64
	for _, s := range []string{"one", `{"two":2}`, "three"} {
		off, err := l.Append([]byte(s), s != "three")
		if err != nil {
			t.Fatal(err)
		}
		offs = append(offs, off)
	}
	if b, err := l.ReadAt(offs[1], len(`{"two":2}`)); err != nil || string(b) != `{"two":2}` {
		t.Fatalf("ReadAt: %q %v", b, err)
	}
	if _, err := l.Append([]byte("a\nb"), true); err == nil {
		t.Fatal("a payload with a newline accepted")
	}
	recs, st, err = Read(p)
	if err != nil || len(recs) != 3 || string(recs[2].Payload) != "three" || recs[1].Off != offs[1] || st != (Stats{}) {
		t.Fatalf("Read: %v %+v %v", recs, st, err)
	}

	// A bad record in the middle is counted, a bad tail is torn; Open cuts only the tail.
	data, _ := os.ReadFile(p)
	data[10] ^= 1 // "one"
	data = append(data, "0000"...)
	os.WriteFile(p, data, 0o600)
	l2, recs, st, err := Open(p)
	if err != nil || len(recs) != 2 || st.Bad != 1 || st.Torn != 4 {
		t.Fatalf("Open after damage: %v %+v %v", recs, st, err)
	}
	if fi, _ := os.Stat(p); fi.Size() != int64(len(data)-4) {
		t.Fatalf("the torn tail is not cut: %d bytes", fi.Size())
	}
	offs, err = l2.Rewrite([][]byte{[]byte("only")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l2.Append([]byte("after"), true); err != nil {
		t.Fatal(err)
	}
	recs, st, _ = Read(p)
	if len(recs) != 2 || string(recs[0].Payload) != "only" || recs[0].Off != offs[0] || st != (Stats{}) {
		t.Fatalf("after Rewrite: %v %+v", recs, st)
	}
	if err := l2.Truncate(); err != nil || l2.Size() != 0 {
		t.Fatal(err, l2.Size())
	}
	l2.Close()
}
