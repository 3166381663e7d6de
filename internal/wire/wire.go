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
	"reflect"
	"sync"
	"time"
)

// Version is the protocol version this build speaks. A peer announcing any other version is
// refused, with no fallback (DESIGN.md invariant 12). Version 2 encrypts everything after the
// hello: the auth to the master's box key, requests and replies under per-minion session keys,
// jobs under per-job keys wrapped for each recipient.
const Version byte = 2

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
// everything a minion says afterwards. Challenge, AuthReply, Reply and NoSession answer them
// over ROUTER; Job and Heartbeat are published. Only Hello, Challenge, NoSession and Heartbeat
// travel in clear, and none of them carries anything secret.
const (
	THello     Type = 1
	TChallenge Type = 2
	TAuth      Type = 3
	TAuthReply Type = 4
	TRequest   Type = 5
	TReply     Type = 6
	TNoSession Type = 7
	TSubscribe Type = 8 // a subscription credential, sent as a topic on the publish port (SubCredential)
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
	case TNoSession:
		return "no-session"
	case TSubscribe:
		return "subscribe"
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
// later versions may add some. Numbers that land in an interface value (a map[string]any of
// facts) are json.Number, so that no integer loses precision.
func Unmarshal(data []byte, max int, v any) error {
	if len(data) > max {
		return ErrTooLarge
	}
	if !holdsInterface(reflect.TypeOf(v)) {
		// Nothing to hold a json.Number: json.Unmarshal decodes data in place, where a Decoder
		// copies it into a buffer of its own first (a return is decoded three times over:
		// request, signed return, return).
		if err := json.Unmarshal(data, v); err != nil {
			return fmt.Errorf("wire: %w", err)
		}
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("wire: %w", err)
	}
	// Only white space may follow the value (Decoder.More lets a stray ']' or '}' pass), as
	// json.Unmarshal requires.
	if len(bytes.TrimLeft(data[dec.InputOffset():], " \t\r\n")) > 0 {
		return errors.New("wire: trailing data")
	}
	return nil
}

// interfaceTypes caches holdsInterface by type.
var interfaceTypes sync.Map // reflect.Type -> bool

// holdsInterface reports whether a value of type t can hold an interface value that JSON
// decodes into (a field, element or map value of interface type, at any depth), or t is nil.
func holdsInterface(t reflect.Type) bool {
	if t == nil {
		return true
	}
	if v, ok := interfaceTypes.Load(t); ok {
		return v.(bool)
	}
	has := walkInterface(t, map[reflect.Type]bool{})
	interfaceTypes.Store(t, has)
	return has
}

func walkInterface(t reflect.Type, seen map[reflect.Type]bool) bool {
	if seen[t] {
		return false // a recursive type: its other paths are being walked
	}
	seen[t] = true
	switch t.Kind() {
	case reflect.Interface:
		return true
	case reflect.Pointer, reflect.Slice, reflect.Array:
		return walkInterface(t.Elem(), seen)
	case reflect.Map:
		return walkInterface(t.Key(), seen) || walkInterface(t.Elem(), seen)
	case reflect.Struct:
		for i := range t.NumField() {
			if walkInterface(t.Field(i).Type, seen) {
				return true
			}
		}
	}
	return false
}

// Signature domains: every signature brine makes names what it is for.
const (
	DomainChallenge = "brine-challenge-v1"
	DomainAuth      = "brine-auth-v1"
	DomainAuthReply = "brine-auth-reply-v1"
	DomainRequest   = "brine-request-v2" // tags the plaintext of a sealed request
	DomainReply     = "brine-reply-v2"   // tags the plaintext of a sealed reply
	DomainNoSession = "brine-no-session-v2"
	DomainSubscribe = "brine-subscribe-v2" // tags the session id sealed in a subscription credential
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
// On the wire it is sealed with nacl/box to the master's box key (AuthFrame), so the token and
// the groups cross the network encrypted.
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

// AuthReply is the master's signed verdict, sealed with nacl/box to the minion's box key. Only
// an accepted minion gets a session id and its own session key.
type AuthReply struct {
	ClientNonce []byte   `json:"client_nonce"`
	Status      string   `json:"status"`
	Reason      string   `json:"reason,omitempty"`
	SessionID   []byte   `json:"session_id,omitempty"`
	SessionKey  []byte   `json:"session_key,omitempty"` // pki.SessionKey.Marshal, for this minion alone
	KeyGen      []byte   `json:"key_gen,omitempty"`     // the rotation generation of SessionKey
	Groups      []string `json:"groups,omitempty"`
}

// SessionIDLen is the length of a session id.
const SessionIDLen = 16

// NonceLen is the length of a challenge nonce.
const NonceLen = 32

// AuthFrame is the body of a TAuth message: the server nonce in clear (the master finds the
// challenge, and with it the minion's box key, by it), then the box-sealed signed Auth.
func AuthFrame(serverNonce, sealed []byte) []byte {
	out := make([]byte, 0, len(serverNonce)+len(sealed))
	return append(append(out, serverNonce...), sealed...)
}

// SplitAuth splits a TAuth body into server nonce and sealed box.
func SplitAuth(body []byte) (serverNonce, sealed []byte, err error) {
	if len(body) < NonceLen {
		return nil, nil, ErrShort
	}
	return body[:NonceLen], body[NonceLen:], nil
}

// SessionFrame is the envelope of a TRequest or TReply: the session id and the id of the
// session key in clear (so the master finds the session and the key without trying any), then
// the secretbox (pki.SessionKey.SealTagged) of the JSON Request or Reply.
func SessionFrame(t Type, sid []byte, keyID [KeyIDLen]byte, sealed []byte) []byte {
	body := make([]byte, 0, SessionIDLen+KeyIDLen+len(sealed))
	body = append(append(append(body, sid...), keyID[:]...), sealed...)
	return Encode(t, body)
}

// SplitSession splits a TRequest or TReply body.
func SplitSession(body []byte) (sid []byte, keyID [KeyIDLen]byte, sealed []byte, err error) {
	if len(body) < SessionIDLen+KeyIDLen {
		return nil, keyID, nil, ErrShort
	}
	copy(keyID[:], body[SessionIDLen:])
	return body[:SessionIDLen], keyID, body[SessionIDLen+KeyIDLen:], nil
}

// NoSession is the master's signed answer to a request for a session it does not hold (never
// made, ended by a restart, or the key was rejected): authenticate again. It is in clear, as
// the master holds no key to seal it with, and says nothing but the session id.
type NoSession struct {
	SessionID []byte `json:"sid"`
}

// Request kinds.
const (
	KindHeartbeat = "heartbeat" // liveness; the reply carries the current key generation
	KindSession   = "session"   // rotate this session's key: the reply carries a new one
	KindFacts     = "facts"     // report facts
	KindReturn    = "return"    // deliver a job result
	KindResend    = "resend"    // publish again live jobs this minion missed (body ResendBody)
)

// HeartbeatReply is the body of a KindHeartbeat reply: the live jobs addressed to the minion
// that it has not returned yet, so that a minion that missed one (it was reconnecting, or its
// subscription was not up yet when the job was published) can ask for it with KindResend. Time
// is the master's clock when it answered: the reply is sealed under the minion's session, so a
// minion that has just (re)started learns from it which published heartbeats are replays.
type HeartbeatReply struct {
	Pending []string  `json:"pending,omitempty"`
	Time    time.Time `json:"time"`
}

// ResendBody names the jobs a minion asks the master to publish again.
type ResendBody struct {
	JIDs []string `json:"jids"`
}

// Request is everything a minion sends once it has a session. It travels sealed under the
// session's key (SessionFrame), which only the minion that proved its key at auth and the master
// hold, so the box authenticates it; it is numbered, so the master refuses replays within the
// session.
type Request struct {
	Seq  uint64          `json:"seq"`
	Kind string          `json:"kind"`
	Body json.RawMessage `json:"body,omitempty"`
}

// Reply answers one Request (matched by Seq), sealed under the key the request came with.
type Reply struct {
	Seq    uint64          `json:"seq"`
	OK     bool            `json:"ok"`
	Error  string          `json:"error,omitempty"`
	KeyGen []byte          `json:"key_gen,omitempty"` // the master's current key generation
	Body   json.RawMessage `json:"body,omitempty"`

	// NoSession is never on the wire: a minion sets it on receiving a TNoSession.
	NoSession bool `json:"-"`
}

// SessionBody is the body of a KindSession reply.
type SessionBody struct {
	SessionKey []byte `json:"session_key"` // the new pki.SessionKey, box-sealed to the minion
	KeyGen     []byte `json:"key_gen"`
}

// Heartbeat is published by the master, signed and in clear: proof of life and the current key
// generation (a minion whose session key is older asks for a new one).
type Heartbeat struct {
	Time     time.Time     `json:"time"`
	KeyGen   []byte        `json:"key_gen"`
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
	Groups map[string][]string `json:"groups,omitempty"`
	// Secrets are sealed with nacl/box to each minion's key, on top of the job's encryption:
	// every minion a job addresses reads its meta, only one reads its own secrets.
	Secrets map[string][]byte `json:"secrets,omitempty"` // minion id -> box-sealed JSON map[string]string
	// Run is the command of a JobRun job (run.go).
	Run *RunSpec `json:"run,omitempty"`
	// Capture are the options of a JobCapture job (capture.go).
	Capture *CaptureSpec `json:"capture,omitempty"`
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

// Job frames. The signed job (PackJob, signed) is sealed once under a random job key; the
// frame carries that key wrapped under the session key of each minion it is for:
//
//	nonce(24) | count(4) | count x (session key id(8) | wrapped job key(48)) | sealed payload
//
// A minion finds its wrap by the id of its session key; a minion without one cannot read the
// job. The nonce is fresh per frame and shared by its wraps, each under a different key.
const (
	jobNonceLen = 24
	wrapKeyLen  = 48 // pki.WrapLen
	// WrapEntryLen is the size of one recipient's entry in a job frame.
	WrapEntryLen = KeyIDLen + wrapKeyLen
)

// Wrap is one recipient's entry of a job frame.
type Wrap struct {
	KeyID [KeyIDLen]byte
	Key   []byte // pki.SessionKey.Wrap: wrapKeyLen bytes
}

// JobFrameLen is the length of the envelope JobFrame makes for n wraps and a payload of p bytes.
func JobFrameLen(n, p int) int { return HeaderLen + jobNonceLen + 4 + n*WrapEntryLen + p }

// JobFrame is a published job: the nonce of the wraps, the wraps, then the sealed payload.
func JobFrame(nonce *[24]byte, wraps []Wrap, payload []byte) []byte {
	out := make([]byte, 0, JobFrameLen(len(wraps), len(payload)))
	out = append(out, magic...)
	out = append(out, Version, byte(TJob))
	out = append(out, nonce[:]...)
	out = binary.BigEndian.AppendUint32(out, uint32(len(wraps)))
	for _, w := range wraps {
		if len(w.Key) != wrapKeyLen {
			panic("wire: wrapped job key of the wrong length")
		}
		out = append(append(out, w.KeyID[:]...), w.Key...)
	}
	return append(out, payload...)
}

// JobBody is a TJob body split into its parts. Its slices alias the frame.
type JobBody struct {
	Nonce   [24]byte
	wraps   []byte
	Payload []byte
}

// SplitJob splits a TJob body. It checks only the lengths; the wraps and payload are checked
// by opening them.
func SplitJob(body []byte) (JobBody, error) {
	var j JobBody
	if len(body) < jobNonceLen+4 {
		return j, ErrShort
	}
	copy(j.Nonce[:], body[:jobNonceLen])
	n := binary.BigEndian.Uint32(body[jobNonceLen:])
	rest := body[jobNonceLen+4:]
	if uint64(n)*WrapEntryLen > uint64(len(rest)) {
		return j, ErrShort
	}
	j.wraps = rest[:int(n)*WrapEntryLen]
	j.Payload = rest[int(n)*WrapEntryLen:]
	return j, nil
}

// Wraps returns the number of wraps.
func (j JobBody) Wraps() int { return len(j.wraps) / WrapEntryLen }

// WrapFor returns the wrapped job key for the session key keyID, if the frame has one.
func (j JobBody) WrapFor(keyID [KeyIDLen]byte) ([]byte, bool) {
	for i := 0; i+WrapEntryLen <= len(j.wraps); i += WrapEntryLen {
		if [KeyIDLen]byte(j.wraps[i:i+KeyIDLen]) == keyID {
			return j.wraps[i+KeyIDLen : i+WrapEntryLen], true
		}
	}
	return nil, false
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
