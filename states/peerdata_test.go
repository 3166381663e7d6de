package states_test

import (
	"strings"
	"testing"

	"github.com/brinecm/brine/states"
	"github.com/brinecm/brine/states/resources/restest"
)

func TestParseTincPublicKey(t *testing.T) {
	key := restest.TincKey(t)
	other := restest.TincKey(t)
	if got, err := states.ParseTincPublicKey("\n  " + key + "\n\n"); err != nil || got != key {
		t.Fatalf("a valid key: %q, %v", got, err)
	}
	withHeader := strings.Replace(key, "-----\n", "-----\nProc-Type: 4,ENCRYPTED\n\n", 1)
	for name, bad := range map[string]string{
		"directives before": "Subnet = 0.0.0.0/0\nIndirectData = yes\n" + key,
		"directive after":   key + "\nAddress = 198.51.100.9",
		"two keys":          key + "\n" + other,
		"headers":           withHeader,
		"other type":        strings.ReplaceAll(key, "RSA PUBLIC KEY", "PUBLIC KEY"),
		"not a key":         "-----BEGIN RSA PUBLIC KEY-----\nAAAA\n-----END RSA PUBLIC KEY-----",
		"empty":             "",
		"ssh key":           "ssh-rsa AAAAB3NzaC1yc2E",
	} {
		if got, err := states.ParseTincPublicKey(bad); err == nil {
			t.Errorf("%s: accepted as %q", name, got)
		}
	}
}

func TestCheckDataNoPanic(t *testing.T) {
	if err := states.CheckData(map[string]any{"caf\u00e9": 1, "cafe\u0301": 2}); err == nil {
		t.Fatal("keys equal after NFC were accepted")
	}
	if err := states.CheckData(map[string]any{"ok": []any{"a", 1.0}}); err != nil {
		t.Fatal(err)
	}
}
