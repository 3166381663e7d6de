package minion

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/brinecm/brine/internal/atomicfile"
	"github.com/brinecm/brine/pki"
)

// ErrMasterKeyChanged ends a connection to a master whose key is not the pinned one.
var ErrMasterKeyChanged = errors.New("the master's key differs from the pinned one; refusing it")

// keyring holds the keys a minion shares between its sessions and its executor: its own key
// pair, the pinned master key, and the session keys of the live session (the current one and the
// one before the last rotation, for jobs wrapped before it). Safe for concurrent use.
type keyring struct {
	own     *pki.KeyPair
	dataDir string
	finger  string // master_finger, "" when the first key seen is pinned
	log     *slog.Logger

	mu        sync.Mutex // guards the fields below
	master    *pki.PublicKey
	sk        *pki.SessionKey // this minion's own session key: requests, replies, job wraps
	skPrev    *pki.SessionKey // the one before the last rotation
	gen       [8]byte         // the master's key generation sk was made in
	shared    *pki.SharedKey  // the box key shared with the master's box key sharedFor (auth)
	sharedFor [32]byte
}

// newKeyring loads the pinned master key from dataDir, if there is one.
func newKeyring(own *pki.KeyPair, dataDir, finger string, log *slog.Logger) *keyring {
	k := &keyring{own: own, dataDir: dataDir, finger: finger, log: log}
	if data, err := os.ReadFile(filepath.Join(dataDir, "master.pub")); err == nil {
		if pk, err := pki.ParsePublicKey(string(data)); err == nil {
			k.master = &pk
		}
	}
	return k
}

// pin checks the master's key against master_finger, or the key stored on first use.
func (k *keyring) pin(mk pki.PublicKey) error {
	if k.finger != "" {
		if pki.NormalizeFingerprint(k.finger) != pki.NormalizeFingerprint(mk.Fingerprint()) {
			k.log.Error("master key does not match master_finger", "presented", mk.Fingerprint())
			return ErrMasterKeyChanged
		}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.master != nil {
		if !k.master.Equal(mk) {
			k.log.Error("master key changed since first use; refusing it", "pinned", k.master.Fingerprint(), "presented", mk.Fingerprint())
			return ErrMasterKeyChanged
		}
		return nil
	}
	if err := atomicfile.Write(filepath.Join(k.dataDir, "master.pub"), []byte(mk.String()+"\n"), 0o600); err != nil {
		return err
	}
	k.master = &mk
	if k.finger != "" {
		k.log.Info("pinned the master's key (it matches master_finger)", "finger", mk.Fingerprint())
	} else {
		k.log.Info("pinned the master's key on first use", "finger", mk.Fingerprint())
	}
	return nil
}

// pinned returns the pinned master key, nil before the first connection.
func (k *keyring) pinned() *pki.PublicKey {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.master
}

// sharedWith returns the box key shared with the (pinned) master key mk, computed once: a
// reconnecting minion does no scalar multiplication for its auth.
func (k *keyring) sharedWith(mk pki.PublicKey) *pki.SharedKey {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.shared == nil || k.sharedFor != mk.Box {
		k.shared, k.sharedFor = k.own.Shared(mk.Box), mk.Box
	}
	return k.shared
}

// keys returns the pinned master key and the current and previous session keys.
func (k *keyring) keys() (mk *pki.PublicKey, cur, prev *pki.SessionKey) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.master, k.sk, k.skPrev
}

// session returns the current session key and its key generation.
func (k *keyring) session() (*pki.SessionKey, [8]byte) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.sk, k.gen
}

// authenticated installs the session key of a new authentication; the previous ones go.
func (k *keyring) authenticated(sk *pki.SessionKey, gen [8]byte) {
	k.mu.Lock()
	k.sk, k.skPrev, k.gen = sk, nil, gen
	k.mu.Unlock()
}

// rotated installs sk of generation gen in place of cur, kept as the previous key, unless a new
// authentication replaced cur meanwhile.
func (k *keyring) rotated(cur, sk *pki.SessionKey, gen [8]byte) {
	k.mu.Lock()
	if k.sk == cur {
		k.skPrev, k.sk, k.gen = cur, sk, gen
	}
	k.mu.Unlock()
}
