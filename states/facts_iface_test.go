package states

import "testing"

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
