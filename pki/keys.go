// Package pki holds brine's keys: an ed25519 signing pair and a curve25519 box pair for every
// master and minion, the master's key store of minions (pending, accepted, rejected, denied),
// session keys, and enrolment tokens. It knows nothing of HCL or the network.
package pki

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/brinecm/brine/internal/atomicfile"
	"golang.org/x/crypto/nacl/box"
	"golang.org/x/crypto/nacl/secretbox"
	"golang.org/x/crypto/nacl/sign"
)

// PublicKey is the public half of a brine identity: an ed25519 key that signs and a curve25519
// key that receives sealed boxes.
type PublicKey struct {
	Sign [32]byte
	Box  [32]byte
}

// KeyPair is a full brine identity. Its private halves never leave the process except into its
// 0600 key file.
type KeyPair struct {
	Pub      PublicKey
	signPriv [64]byte
	boxPriv  [32]byte
}

// GenerateKeyPair makes a fresh identity from crypto/rand.
func GenerateKeyPair() (*KeyPair, error) {
	spub, spriv, err := sign.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate signing key: %w", err)
	}
	bpub, bpriv, err := box.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate box key: %w", err)
	}
	return &KeyPair{Pub: PublicKey{Sign: *spub, Box: *bpub}, signPriv: *spriv, boxPriv: *bpriv}, nil
}

// String encodes the public key as "brine1:" + base64url(sign || box), the form stored on disk
// and shown by `brine key list`.
func (p PublicKey) String() string {
	var raw [64]byte
	copy(raw[:32], p.Sign[:])
	copy(raw[32:], p.Box[:])
	return "brine1:" + base64.RawURLEncoding.EncodeToString(raw[:])
}

// ParsePublicKey reads the form String writes.
func ParsePublicKey(s string) (PublicKey, error) {
	var p PublicKey
	rest, ok := strings.CutPrefix(strings.TrimSpace(s), "brine1:")
	if !ok {
		return p, errors.New("public key: missing brine1: prefix")
	}
	raw, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil || len(raw) != 64 {
		return p, errors.New("public key: bad encoding")
	}
	copy(p.Sign[:], raw[:32])
	copy(p.Box[:], raw[32:])
	return p, nil
}

// Fingerprint is the sha256 of both public halves, as colon-separated hex pairs (the form of
// `master_finger` in a minion's config). It commits to both keys, so pinning it pins both.
func (p PublicKey) Fingerprint() string {
	h := sha256.New()
	h.Write([]byte("brine-fingerprint-v1"))
	h.Write(p.Sign[:])
	h.Write(p.Box[:])
	sum := hex.EncodeToString(h.Sum(nil))
	var b strings.Builder
	for i := 0; i < len(sum); i += 2 {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(sum[i : i+2])
	}
	return b.String()
}

// NormalizeFingerprint lowercases f and drops separators, so that pinned fingerprints compare
// whatever way the operator copied them.
func NormalizeFingerprint(f string) string {
	f = strings.ToLower(f)
	return strings.Map(func(r rune) rune {
		if r == ':' || r == ' ' || r == '-' {
			return -1
		}
		return r
	}, f)
}

// Equal reports whether two public keys are the same identity.
func (p PublicKey) Equal(q PublicKey) bool { return p.Sign == q.Sign && p.Box == q.Box }

// Sign signs msg under a domain label, so that a signature made for one purpose (an auth
// answer) can never be passed off as another (a job).
func (k *KeyPair) Sign(domain string, msg []byte) []byte {
	return ed25519.Sign(ed25519.PrivateKey(k.signPriv[:]), domained(domain, msg))
}

// Verify checks a signature made by Sign with the same domain.
func Verify(pub [32]byte, domain string, msg, sig []byte) bool {
	if len(sig) != ed25519.SignatureSize {
		return false
	}
	return ed25519.Verify(ed25519.PublicKey(pub[:]), domained(domain, msg), sig)
}

func domained(domain string, msg []byte) []byte {
	out := make([]byte, 0, len(domain)+1+len(msg))
	out = append(out, domain...)
	out = append(out, 0)
	return append(out, msg...)
}

// SignAttached returns sig || domain-less message in nacl/sign's attached form; used for large
// payloads (jobs) where a copy for the domain prefix would double memory. The message itself
// must start with its own type tag.
func (k *KeyPair) SignAttached(msg []byte) []byte { return sign.Sign(nil, msg, &k.signPriv) }

// OpenAttached verifies a SignAttached message and returns its content.
func OpenAttached(pub [32]byte, signed []byte) ([]byte, bool) {
	if len(signed) < sign.Overhead {
		return nil, false
	}
	return sign.Open(nil, signed, &pub)
}

// SealTo encrypts msg so that only the holder of to's private box key can read it, and so that
// it can only have come from k. The 24-byte nonce is prepended.
func (k *KeyPair) SealTo(to [32]byte, msg []byte) []byte {
	var nonce [24]byte
	if _, err := io.ReadFull(rand.Reader, nonce[:]); err != nil {
		panic("pki: crypto/rand failed: " + err.Error())
	}
	return box.Seal(nonce[:], msg, &nonce, &to, &k.boxPriv)
}

// OpenFrom decrypts a SealTo box that from sealed to k.
func (k *KeyPair) OpenFrom(from [32]byte, sealed []byte) ([]byte, bool) {
	if len(sealed) < 24+box.Overhead {
		return nil, false
	}
	var nonce [24]byte
	copy(nonce[:], sealed[:24])
	return box.Open(nil, sealed[24:], &nonce, &from, &k.boxPriv)
}

// SharedKey is the nacl/box key that k and one peer share (curve25519 of k's box private key
// and the peer's box public key). Computing it is the costly part of box (a scalar
// multiplication, about 100 us); a SharedKey pays it once for any number of boxes, which are
// the same as SealTo and OpenFrom make.
type SharedKey struct{ key [32]byte }

// Shared precomputes the box key k shares with peer.
func (k *KeyPair) Shared(peer [32]byte) *SharedKey {
	s := &SharedKey{}
	box.Precompute(&s.key, &peer, &k.boxPriv)
	return s
}

// Seal is SealTo with a precomputed key: nonce(24) || box.
func (s *SharedKey) Seal(msg []byte) []byte {
	nonce := RandomNonce()
	out := make([]byte, 24, 24+len(msg)+box.Overhead)
	copy(out, nonce[:])
	return box.SealAfterPrecomputation(out, msg, nonce, &s.key)
}

// Open is OpenFrom with a precomputed key.
func (s *SharedKey) Open(sealed []byte) ([]byte, bool) {
	if len(sealed) < 24+box.Overhead {
		return nil, false
	}
	var nonce [24]byte
	copy(nonce[:], sealed[:24])
	return box.OpenAfterPrecomputation(nil, sealed[24:], &nonce, &s.key)
}

// SessionKey is the symmetric key of one minion's session with the master (nacl/secretbox).
// The master makes one per minion at authentication and again at each rotation; it encrypts the
// requests and replies of that session and wraps the key of every job addressed to the minion.
// ID names it on the wire (a request says which key it is sealed with, a job frame which wrap is
// whose); IDs are random, so a restarted master never reuses one.
type SessionKey struct {
	ID  [8]byte
	Key [32]byte
}

// NewSessionKey makes a fresh random session key.
func NewSessionKey() *SessionKey {
	s := &SessionKey{}
	randomFill(s.ID[:])
	randomFill(s.Key[:])
	return s
}

func randomFill(b []byte) {
	if _, err := io.ReadFull(rand.Reader, b); err != nil {
		panic("pki: crypto/rand failed: " + err.Error())
	}
}

// Seal encrypts msg with secretbox under a random nonce: nonce(24) || box.
func (s *SessionKey) Seal(msg []byte) []byte { return sealSecret(&s.Key, msg) }

// Open decrypts a Seal box.
func (s *SessionKey) Open(sealed []byte) ([]byte, bool) { return openSecret(&s.Key, sealed) }

// SealTagged seals tag, a NUL and msg, so that a box made for one purpose (a request) cannot be
// passed off as another (a reply reflected back to its sender) under the same key.
func (s *SessionKey) SealTagged(tag string, msg []byte) []byte {
	plain := make([]byte, 0, len(tag)+1+len(msg))
	plain = append(append(append(plain, tag...), 0), msg...)
	return sealSecret(&s.Key, plain)
}

// OpenTagged opens a SealTagged box and checks its tag.
func (s *SessionKey) OpenTagged(tag string, sealed []byte) ([]byte, bool) {
	plain, ok := openSecret(&s.Key, sealed)
	if !ok || len(plain) < len(tag)+1 || string(plain[:len(tag)]) != tag || plain[len(tag)] != 0 {
		return nil, false
	}
	return plain[len(tag)+1:], true
}

// WrapLen is the length of a wrapped job key: the key and secretbox's tag.
const WrapLen = 32 + secretbox.Overhead

// Wrap encrypts a job key for the holder of s. nonce is the job frame's: it is fresh for every
// frame and each session key appears at most once in a frame, so no (key, nonce) pair repeats.
func (s *SessionKey) Wrap(nonce *[24]byte, jobKey *JobKey) []byte {
	return secretbox.Seal(make([]byte, 0, WrapLen), jobKey[:], nonce, &s.Key)
}

// Unwrap opens a job key wrapped by Wrap.
func (s *SessionKey) Unwrap(nonce *[24]byte, wrapped []byte) (*JobKey, bool) {
	if len(wrapped) != WrapLen {
		return nil, false
	}
	raw, ok := secretbox.Open(make([]byte, 0, 32), wrapped, nonce, &s.Key)
	if !ok {
		return nil, false
	}
	var k JobKey
	copy(k[:], raw)
	return &k, true
}

// JobKey is the random key one job's signed content is sealed under; each recipient gets it
// wrapped under its own session key, so the content is encrypted once however many minions a
// job addresses, and read only by them.
type JobKey [32]byte

// NewJobKey makes a fresh random job key.
func NewJobKey() *JobKey {
	k := &JobKey{}
	randomFill(k[:])
	return k
}

// Seal encrypts msg with secretbox under a random nonce: nonce(24) || box.
func (k *JobKey) Seal(msg []byte) []byte { return sealSecret((*[32]byte)(k), msg) }

// Open decrypts a Seal box.
func (k *JobKey) Open(sealed []byte) ([]byte, bool) { return openSecret((*[32]byte)(k), sealed) }

// RandomNonce returns a fresh 24-byte nonce.
func RandomNonce() *[24]byte {
	var n [24]byte
	randomFill(n[:])
	return &n
}

// SecretOverhead is what sealing under a session or job key adds to a message: its nonce and
// its authenticator.
const SecretOverhead = 24 + secretbox.Overhead

func sealSecret(key *[32]byte, msg []byte) []byte {
	nonce := RandomNonce()
	out := make([]byte, 24, 24+len(msg)+secretbox.Overhead)
	copy(out, nonce[:])
	return secretbox.Seal(out, msg, nonce, key)
}

func openSecret(key *[32]byte, sealed []byte) ([]byte, bool) {
	if len(sealed) < 24+secretbox.Overhead {
		return nil, false
	}
	var nonce [24]byte
	copy(nonce[:], sealed[:24])
	return secretbox.Open(nil, sealed[24:], &nonce, key)
}

// Marshal encodes the session key as id || key.
func (s *SessionKey) Marshal() []byte {
	out := make([]byte, 0, 40)
	out = append(out, s.ID[:]...)
	return append(out, s.Key[:]...)
}

// UnmarshalSessionKey reads the form Marshal writes.
func UnmarshalSessionKey(b []byte) (*SessionKey, error) {
	if len(b) != 40 {
		return nil, errors.New("session key: bad length")
	}
	s := &SessionKey{}
	copy(s.ID[:], b[:8])
	copy(s.Key[:], b[8:])
	return s, nil
}

// RandomBytes returns n bytes from crypto/rand.
func RandomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := io.ReadFull(rand.Reader, b); err != nil {
		panic("pki: crypto/rand failed: " + err.Error())
	}
	return b
}

// keyFile is the on-disk form of a KeyPair (0600).
const keyFileHeader = "brine-private-key-v1"

// SaveKeyPair writes k to path with mode 0600 (atomically) and its public half to path+".pub".
func SaveKeyPair(path string, k *KeyPair) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	var raw []byte
	raw = append(raw, k.signPriv[:]...)
	raw = append(raw, k.boxPriv[:]...)
	raw = append(raw, k.Pub.Box[:]...)
	content := keyFileHeader + "\n" + base64.StdEncoding.EncodeToString(raw) + "\n"
	if err := atomicfile.Write(path, []byte(content), 0o600); err != nil {
		return fmt.Errorf("save key %s: %w", path, err)
	}
	if err := atomicfile.Write(path+".pub", []byte(k.Pub.String()+"\n"), 0o644); err != nil {
		return fmt.Errorf("save key %s.pub: %w", path, err)
	}
	return nil
}

// LoadKeyPair reads a key written by SaveKeyPair. It refuses a key file that group or others
// can read, as ssh does.
func LoadKeyPair(path string) (*KeyPair, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("key %s: mode %v is too open, want 0600", path, st.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	head, body, ok := strings.Cut(string(data), "\n")
	if !ok || head != keyFileHeader {
		return nil, fmt.Errorf("key %s: not a brine private key", path)
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(body))
	if err != nil || len(raw) != 64+32+32 {
		return nil, fmt.Errorf("key %s: corrupt", path)
	}
	k := &KeyPair{}
	copy(k.signPriv[:], raw[:64])
	copy(k.boxPriv[:], raw[64:96])
	copy(k.Pub.Box[:], raw[96:])
	copy(k.Pub.Sign[:], ed25519.PrivateKey(k.signPriv[:]).Public().(ed25519.PublicKey))
	return k, nil
}

// LoadOrCreateKeyPair loads the key at path, or makes and saves one if there is none.
func LoadOrCreateKeyPair(path string) (k *KeyPair, created bool, err error) {
	k, err = LoadKeyPair(path)
	if err == nil {
		return k, false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, false, err
	}
	k, err = GenerateKeyPair()
	if err != nil {
		return nil, false, err
	}
	if err := SaveKeyPair(path, k); err != nil {
		return nil, false, err
	}
	return k, true, nil
}
