// Package wire is brine's network message format: a versioned envelope around JSON bodies,
// signed where the sender must be proven, with size limits on everything. Every decoder here
// takes bytes from the network: it checks lengths before it slices and never panics
// (DESIGN.md invariant 9; see the fuzz targets).
package wire

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Version is the protocol version this build speaks. A peer announcing any other version is
// refused, with no fallback (DESIGN.md invariant 12).
const Version byte = 1

// magic starts every envelope.
const magic = "brn"

// HeaderLen is the envelope header: magic, version, type.
const HeaderLen = len(magic) + 2

// Size limits. A job carries a whole bundle (states.MaxBundleBytes is 64 MiB) plus its context;
// everything a minion sends is far smaller.
const (
	MaxJobFrame     = 100 << 20 // master -> minion, on PUB
	MaxRequestFrame = 16 << 20  // minion -> master, on ROUTER
	MaxReplyFrame   = 1 << 20   // master -> minion, on ROUTER
	MaxFacts        = 1 << 20   // encoded facts of one minion
)

// Type says what an envelope holds.
type Type byte

// The message types. Hello and Auth come from minions that have no session yet; Request is
// everything a minion says afterwards. Challenge, AuthReply and Reply answer them over ROUTER;
// Job and Heartbeat are published.
const (
	THello     Type = 1
	TChallenge Type = 2
	TAuth      Type = 3
	TAuthReply Type = 4
	TRequest   Type = 5
	TReply     Type = 6
	TJob       Type = 16
	THeartbeat Type = 17
)

func (t Type) String() string {
	switch t {
	case THello:
		return "hello"
	case TChallenge:
		return "challenge"
	case TAuth:
		return "auth"
	case TAuthReply:
		return "auth-reply"
	case TRequest:
		return "request"
	case TReply:
		return "reply"
	case TJob:
		return "job"
	case THeartbeat:
		return "heartbeat"
	}
	return fmt.Sprintf("type(%d)", byte(t))
}

// Errors of Decode.
var (
	ErrShort    = errors.New("wire: short message")
	ErrMagic    = errors.New("wire: not a brine message")
	ErrVersion  = errors.New("wire: unsupported protocol version")
	ErrTooLarge = errors.New("wire: message too large")
	ErrBadSig   = errors.New("wire: bad signature")
)

// Encode wraps body in an envelope of type t.
func Encode(t Type, body []byte) []byte {
	out := make([]byte, 0, HeaderLen+len(body))
	out = append(out, magic...)
	out = append(out, Version, byte(t))
	return append(out, body...)
}

// Decode unwraps an envelope no larger than max. The returned body aliases frame.
func Decode(frame []byte, max int) (Type, []byte, error) {
	if len(frame) > max {
		return 0, nil, ErrTooLarge
	}
	if len(frame) < HeaderLen {
		return 0, nil, ErrShort
	}
	if string(frame[:len(magic)]) != magic {
		return 0, nil, ErrMagic
	}
	if frame[len(magic)] != Version {
		return 0, nil, ErrVersion
	}
	return Type(frame[len(magic)+1]), frame[HeaderLen:], nil
}

// SigLen is the length of an ed25519 signature.
const SigLen = 64

// Signed joins a detached signature and the bytes it signs: sig || data.
func Signed(sig, data []byte) []byte {
	out := make([]byte, 0, len(sig)+len(data))
	return append(append(out, sig...), data...)
}

// SplitSigned splits a Signed body. The caller verifies sig over data before trusting data.
func SplitSigned(body []byte) (sig, data []byte, err error) {
	if len(body) < SigLen {
		return nil, nil, ErrShort
	}
	return body[:SigLen], body[SigLen:], nil
}

// Unmarshal decodes JSON data into v after a size check; unknown fields are ignored so that
// later versions may add some.
func Unmarshal(data []byte, max int, v any) error {
	if len(data) > max {
		return ErrTooLarge
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("wire: %w", err)
	}
	if dec.More() {
		return errors.New("wire: trailing data")
	}
	return nil
}

// Signature domains: every signature brine makes names what it is for.
const (
	DomainChallenge = "brine-challenge-v1"
	DomainAuth      = "brine-auth-v1"
	DomainAuthReply = "brine-auth-reply-v1"
	DomainRequest   = "brine-request-v1"
	DomainReply     = "brine-reply-v1"
	DomainHeartbeat = "brine-heartbeat-v1"
	DomainReturn    = "brine-return-v1"
)

// Hello opens an authentication: a minion names itself and its public key and sends a fresh
// nonce. It proves nothing by itself.
type Hello struct {
	ID    string `json:"id"`
	Key   string `json:"key"`
	Nonce []byte `json:"nonce"`
}

// Challenge is the master's signed answer to Hello: its own public key, the minion's nonce
// echoed (so the answer cannot be replayed to another hello) and a fresh nonce for the minion to
// sign.
type Challenge struct {
	MasterKey   string    `json:"master_key"`
	ClientNonce []byte    `json:"client_nonce"`
	ServerNonce []byte    `json:"server_nonce"`
	Time        time.Time `json:"time"`
}

// Auth proves the minion holds the private key of Key: it is signed by that key over both
// nonces. Token, when set, is an enrolment token; Groups are the groups the minion asks for.
type Auth struct {
	ID          string   `json:"id"`
	Key         string   `json:"key"`
	ClientNonce []byte   `json:"client_nonce"`
	ServerNonce []byte   `json:"server_nonce"`
	Token       string   `json:"token,omitempty"`
	Groups      []string `json:"groups,omitempty"`
}

// Auth statuses.
const (
	StatusAccepted = "accepted"
	StatusPending  = "pending"
	StatusRejected = "rejected"
	StatusDenied   = "denied"
	StatusRefused  = "refused" // malformed, bad proof, bad id
)

// AuthReply is the master's signed verdict. Only an accepted minion gets a session id and the
// session key, sealed to its box key.
type AuthReply struct {
	ClientNonce []byte   `json:"client_nonce"`
	Status      string   `json:"status"`
	Reason      string   `json:"reason,omitempty"`
	SessionID   []byte   `json:"session_id,omitempty"`
	SessionKey  []byte   `json:"session_key,omitempty"` // box-sealed pki.SessionKey
	Groups      []string `json:"groups,omitempty"`
}

// Request kinds.
const (
	KindHeartbeat = "heartbeat" // liveness; the reply carries the current session key id
	KindSession   = "session"   // fetch the current session key
	KindFacts     = "facts"     // report facts
	KindReturn    = "return"    // deliver a job result
	KindResend    = "resend"    // publish again live jobs this minion missed (body ResendBody)
)

// HeartbeatReply is the body of a KindHeartbeat reply: the live jobs addressed to the minion
// that it has not returned yet, so that a minion that missed one (it was reconnecting, or its
// subscription was not up yet when the job was published) can ask for it with KindResend.
type HeartbeatReply struct {
	Pending []string `json:"pending,omitempty"`
}

// ResendBody names the jobs a minion asks the master to publish again.
type ResendBody struct {
	JIDs []string `json:"jids"`
}

// Request is everything a minion sends once it has a session; it is signed by the minion's key
// and numbered, so the master can refuse replays within the session.
type Request struct {
	SessionID []byte          `json:"sid"`
	Seq       uint64          `json:"seq"`
	Kind      string          `json:"kind"`
	Body      json.RawMessage `json:"body,omitempty"`
}

// Reply answers one Request (matched by SessionID and Seq); it is signed by the master.
type Reply struct {
	SessionID []byte          `json:"sid"`
	Seq       uint64          `json:"seq"`
	OK        bool            `json:"ok"`
	Error     string          `json:"error,omitempty"`
	NoSession bool            `json:"no_session,omitempty"` // the master does not know this session: authenticate again
	KeyID     []byte          `json:"key_id,omitempty"`
	Body      json.RawMessage `json:"body,omitempty"`
}

// SessionBody is the body of a KindSession reply.
type SessionBody struct {
	SessionKey []byte `json:"session_key"` // box-sealed to the minion
}

// Heartbeat is published by the master: proof of life and the id of the current session key.
type Heartbeat struct {
	Time     time.Time     `json:"time"`
	KeyID    []byte        `json:"key_id"`
	Interval time.Duration `json:"interval"` // how often the master publishes one
	// RequestEvery, when set, is the least interval between a minion's own heartbeat requests:
	// a master with a large fleet spreads them out to bound their load (0: the minion's own).
	RequestEvery time.Duration `json:"request_every,omitempty"`
}

// Job kinds.
const (
	JobApply = "apply"
	JobPing  = "ping"
)

// JobMeta is the signed description of a job. The bundle travels beside it in the same signed
// message, and BundleDigest binds the two.
type JobMeta struct {
	JID          string                      `json:"jid"`
	Kind         string                      `json:"kind"`
	Target       string                      `json:"target"`
	Minions      []string                    `json:"minions"`
	IssuedAt     time.Time                   `json:"issued_at"`
	ExpiresAt    time.Time                   `json:"expires_at"`
	DryRun       bool                        `json:"dry_run,omitempty"`
	BundleDigest string                      `json:"bundle_digest,omitempty"`
	Vars         map[string]string           `json:"vars,omitempty"`
	VarFiles     map[string][]byte           `json:"var_files,omitempty"`
	Peers        map[string][]map[string]any `json:"peers,omitempty"`
	// Groups are the groups of each addressed minion as the master knows them when it signs the
	// job: a bundle's minion.groups comes from here, never from the minion's cached copy, so that
	// `brine key groups` takes effect on the next job.
	Groups  map[string][]string `json:"groups,omitempty"`
	Secrets map[string][]byte   `json:"secrets,omitempty"` // minion id -> box-sealed JSON map[string]string
	// Run is the command of a JobRun job (run.go).
	Run *RunSpec `json:"run,omitempty"`
}

// jobTag starts the signed content of every job.
const jobTag = "brine-job-v1\x00"

// PackJob lays out the content that the master signs: tag, meta length, meta, bundle.
func PackJob(meta []byte, bundle []byte) []byte {
	out := make([]byte, 0, len(jobTag)+4+len(meta)+len(bundle))
	out = append(out, jobTag...)
	out = binary.BigEndian.AppendUint32(out, uint32(len(meta)))
	out = append(out, meta...)
	return append(out, bundle...)
}

// UnpackJob splits verified job content into meta and bundle.
func UnpackJob(content []byte) (meta, bundle []byte, err error) {
	if len(content) < len(jobTag)+4 || string(content[:len(jobTag)]) != jobTag {
		return nil, nil, errors.New("wire: not a job")
	}
	rest := content[len(jobTag):]
	n := binary.BigEndian.Uint32(rest[:4])
	rest = rest[4:]
	if uint64(n) > uint64(len(rest)) {
		return nil, nil, ErrShort
	}
	return rest[:n], rest[n:], nil
}

// KeyIDLen is the length of a session key id.
const KeyIDLen = 8

// JobFrame is a published job: the id of the session key it is sealed with, then the box.
func JobFrame(keyID [8]byte, sealed []byte) []byte {
	body := make([]byte, 0, KeyIDLen+len(sealed))
	body = append(body, keyID[:]...)
	return Encode(TJob, append(body, sealed...))
}

// SplitJob splits a TJob body into key id and sealed box.
func SplitJob(body []byte) (keyID [8]byte, sealed []byte, err error) {
	if len(body) < KeyIDLen {
		return keyID, nil, ErrShort
	}
	copy(keyID[:], body[:KeyIDLen])
	return keyID, body[KeyIDLen:], nil
}

// Return is a minion's result for one job. It is signed on its own (SignedReturn), so the master
// can keep the proof with the result.
type Return struct {
	JID         string          `json:"jid"`
	Minion      string          `json:"minion"`
	Kind        string          `json:"kind"`
	Success     bool            `json:"success"`
	Error       string          `json:"error,omitempty"`       // why nothing ran (bad bundle, refused job)
	Diagnostics string          `json:"diagnostics,omitempty"` // rendered HCL diagnostics
	Report      json.RawMessage `json:"report,omitempty"`      // states.Report
	Started     time.Time       `json:"started"`
	Finished    time.Time       `json:"finished"`
}

// SignedReturn is a Return with the minion's signature over its exact bytes.
type SignedReturn struct {
	Data []byte `json:"data"`
	Sig  []byte `json:"sig"`
}
