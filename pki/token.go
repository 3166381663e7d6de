package pki

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Token errors; callers show them to the operator, never to the minion.
var (
	ErrTokenInvalid = errors.New("enrolment token unknown or already used")
	ErrTokenExpired = errors.New("enrolment token expired")
)

// Token is the master's record of an enrolment token. Only the token's hash is stored, so a copy
// of the data dir does not hold usable tokens.
type Token struct {
	Hash    string    `json:"hash"`
	Groups  []string  `json:"groups"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
}

// TokenStore keeps enrolment tokens on disk, one file per token hash. Redeeming removes the file
// under the mutex, so a token is used at most once (DESIGN.md invariant 10).
type TokenStore struct {
	dir string
	mu  sync.Mutex // serialises Redeem so that two minions cannot both use one token
}

// OpenTokenStore opens (creating if needed) the token store in dir.
func OpenTokenStore(dir string) (*TokenStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("token store: %w", err)
	}
	return &TokenStore{dir: dir}, nil
}

func tokenHash(tok string) string {
	sum := sha256.Sum256([]byte("brine-token-v1\x00" + tok))
	return hex.EncodeToString(sum[:])
}

// Create makes a token valid for ttl that enrols a minion into groups, and returns its secret
// form ("brn1-..."), shown once.
func (s *TokenStore) Create(groups []string, ttl time.Duration) (string, Token, error) {
	if ttl <= 0 {
		return "", Token{}, errors.New("token ttl must be positive")
	}
	tok := "brn1-" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(RandomBytes(20)))
	now := time.Now().UTC()
	t := Token{Hash: tokenHash(tok), Groups: cleanGroups(groups), Created: now, Expires: now.Add(ttl)}
	data, _ := json.Marshal(t)
	if err := WriteFileAtomic(filepath.Join(s.dir, t.Hash+".json"), data, 0o600); err != nil {
		return "", Token{}, err
	}
	return tok, t, nil
}

// Redeem consumes tok and returns its groups. A token is gone after its first Redeem, valid or
// expired.
func (s *TokenStore) Redeem(tok string, now time.Time) ([]string, error) {
	if !strings.HasPrefix(tok, "brn1-") || len(tok) > 100 {
		return nil, ErrTokenInvalid
	}
	h := tokenHash(tok)
	s.mu.Lock()
	defer s.mu.Unlock()
	p := filepath.Join(s.dir, h+".json")
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, ErrTokenInvalid
	}
	var t Token
	if err := json.Unmarshal(data, &t); err != nil || subtle.ConstantTimeCompare([]byte(t.Hash), []byte(h)) != 1 {
		return nil, ErrTokenInvalid
	}
	if err := os.Remove(p); err != nil {
		return nil, ErrTokenInvalid
	}
	if now.After(t.Expires) {
		return nil, ErrTokenExpired
	}
	return t.Groups, nil
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
