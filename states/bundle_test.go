package states

import "testing"

func TestBundleRoundTripAndHostileArchives(t *testing.T) {
	b := &Bundle{Files: map[string][]byte{"main.hcl": []byte("x"), "files/a": []byte("y")}}
	b2, err := UnmarshalBundle(b.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if b2.Digest() != b.Digest() || len(b2.Files) != 2 {
		t.Fatal("round trip changed the bundle")
	}
	for _, bad := range []string{"../etc/passwd", "/etc/passwd", "a/../../b", "a//b", "./a"} {
		if validBundlePath(bad) {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, err := UnmarshalBundle([]byte("not a tar at all, just garbage bytes......")); err == nil {
		t.Error("garbage accepted")
	}
}

func FuzzUnmarshalBundle(f *testing.F) {
	f.Add((&Bundle{Files: map[string][]byte{"main.hcl": []byte("file \"/x\" {}")}}).Marshal())
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := UnmarshalBundle(data)
		if err != nil {
			return
		}
		for name := range b.Files {
			if !validBundlePath(name) {
				t.Fatalf("accepted invalid path %q", name)
			}
		}
	})
}
