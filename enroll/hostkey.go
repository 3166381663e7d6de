package enroll

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/brinecm/brine/internal/lazyre"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// HostKeys says how a server's host key is verified. Exactly one of KnownHosts and
// Fingerprint is set; there is no way to accept a key unverified.
type HostKeys struct {
	// KnownHosts is an OpenSSH known_hosts file; the server's key must be in it for its
	// address ([host]:port when the port is not 22).
	KnownHosts string
	// Fingerprint is the SHA256:... fingerprint the server's key must have (ssh-keygen -lf):
	// its ed25519 key, or, on a server without one, its ECDSA and then its RSA key.
	Fingerprint string
}

var fingerprintRE = lazyre.New(`^SHA256:[A-Za-z0-9+/]{43}$`)

// fingerprintAlgos are the host key types offered when a fingerprint is the check, ed25519
// first: a server presents the first one it has, and a fingerprint does not say its key's type
// (without this order a Debian sshd shows its ECDSA key, and the fingerprint of its ed25519 key,
// the one an operator reads, never matches).
var fingerprintAlgos = []string{ssh.KeyAlgoED25519, ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521,
	ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256}

// ErrHostKey marks a host key that is not the expected one, or not known at all.
var ErrHostKey = errors.New("host key verification failed")

// verifier is the host key check of one dial: the callback and the key algorithms to offer.
type verifier struct {
	callback ssh.HostKeyCallback
	// algos restricts what the server may present to the types known_hosts holds for it,
	// so that a server with several keys shows the one we can check (empty: any).
	algos []string
}

func (h HostKeys) check() error {
	switch {
	case h.KnownHosts != "" && h.Fingerprint != "":
		return errors.New("give a known_hosts file or a host key fingerprint, not both")
	case h.KnownHosts == "" && h.Fingerprint == "":
		return errors.New("no way to verify the host key: give --known-hosts FILE or --host-key-fingerprint SHA256:...")
	case h.Fingerprint != "" && !fingerprintRE.MatchString(h.Fingerprint):
		return fmt.Errorf("host key fingerprint %q: want SHA256: and 43 base64 characters, as `ssh-keygen -lf` prints", h.Fingerprint)
	}
	return nil
}

// verifier builds the check for a server at addr (host:port).
func (h HostKeys) verifier(addr string) (verifier, error) {
	if err := h.check(); err != nil {
		return verifier{}, err
	}
	if h.Fingerprint != "" {
		want := h.Fingerprint
		return verifier{callback: func(_ string, _ net.Addr, key ssh.PublicKey) error {
			if got := ssh.FingerprintSHA256(key); got != want {
				return fmt.Errorf("%w: %s presented a %s key with fingerprint %s, want %s", ErrHostKey, addr, key.Type(), got, want)
			}
			return nil
		}, algos: fingerprintAlgos}, nil
	}
	cb, err := knownhosts.New(h.KnownHosts)
	if err != nil {
		return verifier{}, fmt.Errorf("known_hosts: %w", err)
	}
	v := verifier{callback: func(host string, remote net.Addr, key ssh.PublicKey) error {
		err := cb(host, remote, key)
		var ke *knownhosts.KeyError
		switch {
		case err == nil:
			return nil
		case errors.As(err, &ke) && len(ke.Want) == 0:
			return fmt.Errorf("%w: %s is not in %s (its %s key is %s); check that fingerprint out of band, then add the key (ssh-keyscan) or pass --host-key-fingerprint",
				ErrHostKey, addr, h.KnownHosts, key.Type(), ssh.FingerprintSHA256(key))
		case errors.As(err, &ke):
			return fmt.Errorf("%w: %s presented a %s key %s that does not match %s:%d: the server changed or someone is in the middle",
				ErrHostKey, addr, key.Type(), ssh.FingerprintSHA256(key), ke.Want[0].Filename, ke.Want[0].Line)
		default:
			return fmt.Errorf("%w: %s: %v", ErrHostKey, addr, err)
		}
	}}
	// Ask the file which key types it holds for addr: a check of a key it cannot hold fails
	// with the known keys in the error.
	var ke *knownhosts.KeyError
	if err := cb(addr, &net.TCPAddr{}, probeKey{}); errors.As(err, &ke) {
		seen := map[string]bool{}
		for _, k := range ke.Want {
			for _, a := range algorithmsFor(k.Key.Type()) {
				if !seen[a] {
					seen[a] = true
					v.algos = append(v.algos, a)
				}
			}
		}
	}
	return v, nil
}

// algorithmsFor lists the signature algorithms that prove a key of type t.
func algorithmsFor(t string) []string {
	if t == ssh.KeyAlgoRSA {
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
	}
	return []string{t}
}

// probeKey is a key no file holds, to learn which keys a file has for an address.
type probeKey struct{}

func (probeKey) Type() string                        { return "brine-probe" }
func (probeKey) Marshal() []byte                     { return []byte(strings.Repeat("\x00", 8) + "brine-probe") }
func (probeKey) Verify([]byte, *ssh.Signature) error { return errors.New("probe key") }

var _ ssh.PublicKey = probeKey{}
