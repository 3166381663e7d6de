package states

import (
	"os"
	"testing"
)

func TestFactIfaceName(t *testing.T) {
	for _, n := range []string{"lo", "eth0", "ens3", "enp0s31f6", "br-0123456789a", "bond0.100", "tinc-mesh", "wg_0", "veth1@x", "docker0"} {
		if !FactIfaceName(n) {
			t.Errorf("%q refused", n)
		}
	}
	for _, n := range []string{"", ".", "..", "eth0:1", "a b", "e\"$(id)", "eth\u202e0", "../eth0", "eth0\n", "0123456789abcdef"} {
		if FactIfaceName(n) {
			t.Errorf("%q accepted", n)
		}
	}
}

func TestFactWordAndHostName(t *testing.T) {
	for _, s := range []string{"", "debian", "22.04", "6.1.0-18-amd64", "5.14.0-362.8.1.el9_3.x86_64", "6.6.13+rpt-rpi-v8", "1:2.3~rc1"} {
		if !FactWord(s) {
			t.Errorf("word %q refused", s)
		}
	}
	for _, s := range []string{"a b", "12\n", "x;y", "$(id)", "debian\u202e", string(make([]byte, 65))} {
		if FactWord(s) {
			t.Errorf("word %q accepted", s)
		}
	}
	long := "a234567890123456789012345678901234567890123456789012345678901234" // 64
	for _, s := range []string{"", "web1", "web-1.example.com", "web-1.example.com.", "WEB_1", long, long + "." + long} {
		if !FactHostName(s) {
			t.Errorf("host name %q refused", s)
		}
	}
	for _, s := range []string{".", "(none)", "a..b", "-web", "web-", "web 1", "web\t1", "a.b-", long + "5", "x\n10.0.0.9 bank"} {
		if FactHostName(s) {
			t.Errorf("host name %q accepted", s)
		}
	}
}

func TestReadOSReleaseQuotes(t *testing.T) {
	p := t.TempDir() + "/os-release"
	if err := os.WriteFile(p, []byte("ID=alpine\nVERSION_ID='3.19'\nPRETTY_NAME=\"Alpine Linux v3.19\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got := readOSRelease(p)
	if got["ID"] != "alpine" || got["VERSION_ID"] != "3.19" || got["PRETTY_NAME"] != "Alpine Linux v3.19" {
		t.Fatalf("%q", got)
	}
}
