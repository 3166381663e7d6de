package pki

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/brinecm/brine/internal/atomicfile"
	"github.com/brinecm/brine/internal/lazyre"
)

// Token errors; callers show them to the operator (and log them), never to the minion.
var (
	ErrTokenInvalid = errors.New("enrolment token unknown or already used")
	ErrTokenExpired = errors.New("enrolment token expired")
	ErrTokenID      = errors.New("enrolment token is for another minion id")
)

// The token forms. brn2 tokens carry the master's fingerprint, so that a minion enrolled with
// one pins the master from its first connection (no trust on first use):
//
//	brn2-<64 hex digits of the master's fingerprint>-<32 base32 characters of secret>
//
// brn1 tokens (no fingerprint) made by older masters are still redeemed until they expire.
const (
	tokenPrefixV1 = "brn1-"
	tokenPrefixV2 = "brn2-"
	maxTokenLen   = 128
)

// Token is the master's record of an enrolment token. Only the token's hash is stored, so a copy
// of the data dir does not hold usable tokens.
type Token struct {
	Hash string `json:"hash"`
	// ID is the minion id, or an id glob ("web*"), the token enrols; empty enrols any id.
	ID      string    `json:"id,omitempty"`
	Groups  []string  `json:"groups"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
}

// Matches reports whether the token may enrol minion id.
func (t Token) Matches(id string) bool {
	if t.ID == "" {
		return true
	}
	ok, _ := path.Match(t.ID, id)
	return ok
}

// TokenRequest asks for a token that enrols one minion.
type TokenRequest struct {
	ID     string // an id or an id glob; empty: any id
	Groups []string
	TTL    time.Duration
}

// TokenStore keeps enrolment tokens on disk, one file per token hash. A token is spent (its file
// removed) only by a successful enrolment, under the store's mutex, so it enrols at most one
// minion however many present it at once (DESIGN.md invariant 10).
type TokenStore struct {
	dir    string
	finger string     // the master's fingerprint, hex without separators
	mu     sync.Mutex // serialises redemption (see KeyStore.Redeem) and creation
}

// OpenTokenStore opens (creating if needed) the token store in dir, for the master whose key is
// master: its tokens carry that key's fingerprint.
func OpenTokenStore(dir string, master PublicKey) (*TokenStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("token store: %w", err)
	}
	return &TokenStore{dir: dir, finger: NormalizeFingerprint(master.Fingerprint())}, nil
}

func tokenHash(tok string) string {
	sum := sha256.Sum256([]byte("brine-token-v1\x00" + tok))
	return hex.EncodeToString(sum[:])
}

var idPatternRE = lazyre.New(`^[a-z0-9.*?\[\]^!-]{1,63}$`)

// ValidIDPattern reports whether p may scope a token: empty (any id), a minion id, or a glob
// over ids (path.Match syntax: * ? [a-z]).
func ValidIDPattern(p string) bool {
	if p == "" {
		return true
	}
	if !idPatternRE.MatchString(p) {
		return false
	}
	_, err := path.Match(p, "x")
	return err == nil
}

// Create makes a token valid for req.TTL that enrols one minion whose id matches req.ID into
// req.Groups, and returns its secret form ("brn2-..."), shown once.
func (s *TokenStore) Create(req TokenRequest) (string, Token, error) {
	tok, t, err := NewToken(s.finger, req, time.Now())
	if err != nil {
		return "", Token{}, err
	}
	data, _ := json.Marshal(t)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := atomicfile.Write(filepath.Join(s.dir, t.Hash+".json"), data, 0o600); err != nil {
		return "", Token{}, err
	}
	return tok, t, nil
}

// TokenMasterFinger returns the master fingerprint a brn2 token carries, in the form of
// PublicKey.Fingerprint, or "" for a token of another form (which carries none; the master
// refuses forms it does not know). A malformed brn2 token is an error.
func TokenMasterFinger(tok string) (string, error) {
	tok = strings.TrimSpace(tok)
	if !strings.HasPrefix(tok, tokenPrefixV2) {
		return "", nil
	}
	rest, ok := strings.CutPrefix(tok, tokenPrefixV2)
	f, secret, ok2 := strings.Cut(rest, "-")
	if !ok || !ok2 || len(f) != 64 || secret == "" || len(tok) > maxTokenLen {
		return "", errors.New("malformed enrolment token: want brn2-<master fingerprint>-<secret> as printed by brine key token create")
	}
	if _, err := hex.DecodeString(f); err != nil || strings.ToLower(f) != f {
		return "", errors.New("malformed enrolment token: the master fingerprint is not lower-case hex")
	}
	var b strings.Builder
	for i := 0; i < len(f); i += 2 {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(f[i : i+2])
	}
	return b.String(), nil
}

// lookup reads the record of tok; s.mu must be held. It spends nothing.
func (s *TokenStore) lookup(tok string) (Token, string, error) {
	if len(tok) > maxTokenLen || !(strings.HasPrefix(tok, tokenPrefixV1) || strings.HasPrefix(tok, tokenPrefixV2)) {
		return Token{}, "", ErrTokenInvalid
	}
	h := tokenHash(tok)
	p := filepath.Join(s.dir, h+".json")
	data, err := os.ReadFile(p)
	if err != nil {
		return Token{}, "", ErrTokenInvalid
	}
	var t Token
	if err := json.Unmarshal(data, &t); err != nil || subtle.ConstantTimeCompare([]byte(t.Hash), []byte(h)) != 1 {
		return Token{}, "", ErrTokenInvalid
	}
	return t, p, nil
}

// Check reports whether tok is a live token that may enrol id, and returns its record. It
// spends nothing; an expired token is removed (it can never enrol anyone).
func (s *TokenStore) Check(tok, id string, now time.Time) (Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.check(tok, id, now)
}

func (s *TokenStore) check(tok, id string, now time.Time) (Token, error) {
	t, p, err := s.lookup(tok)
	if err != nil {
		return Token{}, err
	}
	if now.After(t.Expires) {
		_ = os.Remove(p)
		return Token{}, ErrTokenExpired
	}
	if !t.Matches(id) {
		return Token{}, ErrTokenID
	}
	return t, nil
}

// List returns the unused tokens (hashes only).
func (s *TokenStore) List() ([]Token, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, err
	}
	var out []Token
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(s.dir, e.Name()))
		if err != nil {
			continue
		}
		var t Token
		if json.Unmarshal(data, &t) == nil {
			out = append(out, t)
		}
	}
	return out, nil
}
