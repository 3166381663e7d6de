package pki

import (
	"crypto/subtle"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// The decisions of the key and token stores as pure functions, so that every implementation of
// the stores (the files here, PostgreSQL in internal/store) decides alike: only where the
// records live and how the decision is made atomic differ.

// RedeemDecision is what redeeming a token decides for a presentation.
type RedeemDecision struct {
	// Record is the record that governs the minion afterwards.
	Record MinionKey
	// Denied, when not nil, is the squatter's record to keep as denied.
	Denied *MinionKey
	// Spend reports whether the token is used up (and Record and Denied must be written in the
	// same atomic step); false means nothing is written.
	Spend bool
}

// DecideRedeem decides the redemption of live token t (already checked for p.ID) by p, given
// the record old that governs p.ID (known false: none). See KeyStore.Redeem for the rules.
func DecideRedeem(old MinionKey, known bool, p Presentation, t Token, now time.Time) (RedeemDecision, error) {
	var squatter *MinionKey
	switch {
	case known && old.State == StateRejected:
		return RedeemDecision{}, ErrKeyRejected
	case known && old.State == StateAccepted && old.Key.Equal(p.Key):
		return RedeemDecision{Record: old}, nil
	case known && old.State == StateAccepted:
		return RedeemDecision{}, ErrKeyHeld
	case known && !old.Key.Equal(p.Key):
		squatter = &old
	}
	stamp := now.UTC()
	m := MinionKey{ID: p.ID, Key: p.Key, State: StateAccepted, Groups: t.Groups, Source: p.Source, Created: stamp, Updated: stamp}
	if known && squatter == nil {
		m.Created = old.Created
	}
	d := RedeemDecision{Record: m, Spend: true}
	if squatter != nil {
		denied := *squatter
		denied.State, denied.Groups, denied.Updated = StateDenied, nil, stamp
		d.Denied = &denied
	}
	return d, nil
}

// CheckToken reports whether the stored record t of tok, read under its hash, may enrol id at
// now. expired is true when the record can never enrol anyone and may be removed.
func CheckToken(t Token, tok, id string, now time.Time) (expired bool, err error) {
	if subtle.ConstantTimeCompare([]byte(t.Hash), []byte(TokenHash(tok))) != 1 {
		return false, ErrTokenInvalid
	}
	if now.After(t.Expires) {
		return true, ErrTokenExpired
	}
	if !t.Matches(id) {
		return false, ErrTokenID
	}
	return false, nil
}

// TokenHash returns the hash a token is stored under, or "" for a string that is not of a
// token form (it can match no record).
func TokenHash(tok string) string {
	if len(tok) > maxTokenLen || !(strings.HasPrefix(tok, tokenPrefixV1) || strings.HasPrefix(tok, tokenPrefixV2)) {
		return ""
	}
	return tokenHash(tok)
}

// NewToken makes a token for req at now, carrying the fingerprint finger (hex without
// separators, as NormalizeFingerprint gives it): its secret form, shown once, and the record to
// store.
func NewToken(finger string, req TokenRequest, now time.Time) (string, Token, error) {
	if req.TTL <= 0 {
		return "", Token{}, errors.New("token ttl must be positive")
	}
	if !ValidIDPattern(req.ID) {
		return "", Token{}, fmt.Errorf("token id %q is neither a minion id nor a glob of ids (lower-case letters, digits, '.', '-', '*', '?', [...])", req.ID)
	}
	secret := strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(RandomBytes(20)))
	tok := tokenPrefixV2 + finger + "-" + secret
	now = now.UTC()
	return tok, Token{Hash: tokenHash(tok), ID: req.ID, Groups: cleanGroups(req.Groups), Created: now, Expires: now.Add(req.TTL)}, nil
}

// CleanGroups returns gs trimmed, valid, deduplicated and sorted, as the key store keeps groups.
func CleanGroups(gs []string) []string { return cleanGroups(gs) }

// PendingLimitsFilled returns l with the defaults in its zero fields.
func PendingLimitsFilled(l PendingLimits) PendingLimits {
	l.fill()
	return l
}

// MarshalMinionKey encodes a record as the file store keeps it (the key in text form).
func MarshalMinionKey(m MinionKey) ([]byte, error) {
	m.KeyText = m.Key.String()
	return json.Marshal(m)
}

// UnmarshalMinionKey decodes a record of MarshalMinionKey and checks it names id.
func UnmarshalMinionKey(data []byte, id string) (MinionKey, error) {
	var m MinionKey
	if err := json.Unmarshal(data, &m); err != nil {
		return MinionKey{}, err
	}
	var err error
	if m.Key, err = ParsePublicKey(m.KeyText); err != nil || m.ID != id {
		return MinionKey{}, fmt.Errorf("corrupt key record of %s", id)
	}
	return m, nil
}
