package master_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"

	"github.com/brinecm/brine/internal/tb"
	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/internal/zmtp"
	"github.com/brinecm/brine/master"
	"github.com/brinecm/brine/minion"
	"github.com/brinecm/brine/pki"
	"github.com/brinecm/brine/states"
)

// rawClient speaks the minion protocol by hand, so a test can do what a hostile peer would.
type rawClient struct {
	t       *testing.T
	id      string
	key     *pki.KeyPair
	dealer  zmq4.Socket
	frames  chan []byte
	master  pki.PublicKey
	sid     []byte
	seq     uint64
	session *pki.SessionKey
}

func newRaw(t *testing.T, m *master.Master, id string, key *pki.KeyPair) *rawClient {
	t.Helper()
	if key == nil {
		key = mustKey(t)
	}
	d := zmq4.NewDealer(context.Background(), zmq4.WithLogger(log.New(io.Discard, "", 0)), zmq4.WithDialerMaxRetries(0), zmq4.WithTimeout(2*time.Second))
	if err := d.Dial(zmtp.Endpoint(m.RequestAddr(), wire.MaxReplyFrame)); err != nil {
		t.Fatal(err)
	}
	c := &rawClient{t: t, id: id, key: key, dealer: d, frames: make(chan []byte, 16)}
	go func() {
		for {
			msg, err := d.Recv()
			if err != nil {
				return
			}
			c.frames <- msg.Frames[len(msg.Frames)-1]
		}
	}()
	t.Cleanup(func() { d.Close() })
	return c
}

func (c *rawClient) send(frame []byte) { _ = c.dealer.Send(zmq4.NewMsg(frame)) }

// next returns the next frame's type and body, or ok=false after d.
func (c *rawClient) next(d time.Duration) (wire.Type, []byte, bool) {
	select {
	case f := <-c.frames:
		typ, body, err := wire.Decode(f, wire.MaxReplyFrame)
		if err != nil {
			c.t.Fatalf("undecodable frame from master: %v", err)
		}
		return typ, body, true
	case <-time.After(d):
		return 0, nil, false
	}
}

func (c *rawClient) openSigned(body []byte, domain string, v any) {
	c.t.Helper()
	sig, data, err := wire.SplitSigned(body)
	if err != nil || !pki.Verify(c.master.Sign, domain, data, sig) {
		c.t.Fatalf("master reply does not verify (%s)", domain)
	}
	if err := json.Unmarshal(data, v); err != nil {
		c.t.Fatal(err)
	}
}

// hello sends a hello and returns the verified challenge.
func (c *rawClient) hello(nonce []byte) wire.Challenge {
	c.t.Helper()
	h, _ := json.Marshal(wire.Hello{ID: c.id, Key: c.key.Pub.String(), Nonce: nonce})
	c.send(wire.Encode(wire.THello, h))
	typ, body, ok := c.next(replyWait)
	if !ok || typ != wire.TChallenge {
		c.t.Fatalf("no challenge (%v)", typ)
	}
	sig, data, _ := wire.SplitSigned(body)
	var ch wire.Challenge
	json.Unmarshal(data, &ch)
	c.master, _ = pki.ParsePublicKey(ch.MasterKey)
	if !pki.Verify(c.master.Sign, wire.DomainChallenge, data, sig) {
		c.t.Fatal("challenge not signed")
	}
	return ch
}

// auth runs the whole handshake with signer proving the key (normally c.key). The auth is
// sealed with c.key's box key; an answer this client cannot open comes back with Status "".
func (c *rawClient) auth(token string, signer *pki.KeyPair) wire.AuthReply {
	c.t.Helper()
	nonce := pki.RandomBytes(32)
	ch := c.hello(nonce)
	c.send(c.sealedAuth(ch, nonce, token, nil, signer))
	typ, body, ok := c.next(replyWait)
	if !ok || typ != wire.TAuthReply {
		c.t.Fatalf("no auth reply")
	}
	ar, _ := c.openAuthReply(body)
	if ar.Status == wire.StatusAccepted {
		sk, err := pki.UnmarshalSessionKey(ar.SessionKey)
		if err != nil {
			c.t.Fatal("bad session key")
		}
		c.session = sk
		c.sid = ar.SessionID
		c.seq = 0
	}
	return ar
}

// sealedAuth makes the TAuth message of a minion answering challenge ch, signed by signer and
// sealed by c.key's box key to the master's.
func (c *rawClient) sealedAuth(ch wire.Challenge, nonce []byte, token string, groups []string, signer *pki.KeyPair) []byte {
	a, _ := json.Marshal(wire.Auth{ID: c.id, Key: c.key.Pub.String(), ClientNonce: nonce, ServerNonce: ch.ServerNonce, Token: token, Groups: groups})
	sealed := c.key.SealTo(c.master.Box, wire.Signed(signer.Sign(wire.DomainAuth, a), a))
	return wire.Encode(wire.TAuth, wire.AuthFrame(ch.ServerNonce, sealed))
}

// openAuthReply opens and verifies a TAuthReply body sealed to c.key.
func (c *rawClient) openAuthReply(body []byte) (wire.AuthReply, bool) {
	var ar wire.AuthReply
	opened, ok := c.key.OpenFrom(c.master.Box, body)
	if !ok {
		return ar, false
	}
	c.openSigned(opened, wire.DomainAuthReply, &ar)
	return ar, true
}

// requestFrame seals a request under the client's session key.
func (c *rawClient) requestFrame(kind string, body any) []byte {
	c.seq++
	raw, _ := json.Marshal(body)
	data, _ := json.Marshal(wire.Request{Seq: c.seq, Kind: kind, Body: raw})
	return wire.SessionFrame(wire.TRequest, c.sid, c.session.ID, c.session.SealTagged(wire.DomainRequest, data))
}

// request sends a sealed request and returns the master's reply, or ok=false if it says nothing.
func (c *rawClient) request(kind string, body any) (wire.Reply, []byte, bool) {
	frame := c.requestFrame(kind, body)
	c.send(frame)
	r, ok := c.reply()
	return r, frame, ok
}

// reply returns the next reply: a sealed Reply opened with the session key, or a signed
// NoSession (as a Reply with NoSession set). It waits up to replyWait: a master under the race
// detector on a loaded machine takes seconds to answer a request of a few hundred KiB, and a
// test that expects an answer should fail because there is none, not because it was slow.
// Tests that expect no answer call replyWithin with a short wait of their own.
func (c *rawClient) reply() (wire.Reply, bool) { return c.replyWithin(replyWait) }

// replyWait is how long reply waits for an answer the test expects.
const replyWait = 30 * time.Second

// replyWithin is reply, waiting up to d.
func (c *rawClient) replyWithin(d time.Duration) (wire.Reply, bool) {
	typ, body, ok := c.next(d)
	var r wire.Reply
	switch {
	case !ok:
		return r, false
	case typ == wire.TNoSession:
		var ns wire.NoSession
		c.openSigned(body, wire.DomainNoSession, &ns)
		if !bytes.Equal(ns.SessionID, c.sid) {
			c.t.Fatal("no-session for another session")
		}
		r.NoSession = true
		return r, true
	case typ == wire.TReply:
		sid, keyID, sealed, err := wire.SplitSession(body)
		if err != nil || !bytes.Equal(sid, c.sid) || keyID != c.session.ID {
			c.t.Fatalf("reply for another session or key")
		}
		data, ok := c.session.OpenTagged(wire.DomainReply, sealed)
		if !ok {
			c.t.Fatal("reply does not open")
		}
		if err := json.Unmarshal(data, &r); err != nil {
			c.t.Fatal(err)
		}
		return r, true
	}
	return r, false
}

// capture returns the raw job frames published from now on, as an observer on the publish
// port's path sees them.
func capture(t *testing.T, m *master.Master) chan []byte {
	tap := m.Published(t)
	ch := make(chan []byte, 64)
	go func() {
		for msg := range tap {
			if typ, _, err := wire.Decode(msg[1], wire.MaxJobFrame); err == nil && typ == wire.TJob {
				ch <- msg[1]
			}
		}
	}()
	return ch
}

func nextJob(t *testing.T, ch chan []byte) []byte {
	t.Helper()
	select {
	case f := <-ch:
		_, body, _ := wire.Decode(f, wire.MaxJobFrame)
		return body
	case <-time.After(5 * time.Second):
		t.Fatal("no job captured")
		return nil
	}
}

// openJob opens a captured job frame as its recipient would: the wrap for the client's session
// key, then the payload. ok is false when the frame has no wrap for it.
func (c *rawClient) openJob(body []byte) (wire.JobMeta, *pki.JobKey, bool) {
	c.t.Helper()
	jb, err := wire.SplitJob(body)
	if err != nil {
		c.t.Fatal(err)
	}
	w, ok := jb.WrapFor(c.session.ID)
	if !ok {
		return wire.JobMeta{}, nil, false
	}
	jk, ok := c.session.Unwrap(&jb.Nonce, w)
	if !ok {
		c.t.Fatal("cannot unwrap the job key")
	}
	signed, ok := jk.Open(jb.Payload)
	if !ok {
		c.t.Fatal("cannot decrypt job")
	}
	content, ok := pki.OpenAttached(c.master.Sign, signed)
	if !ok {
		c.t.Fatal("job signature")
	}
	metaRaw, _, _ := wire.UnpackJob(content)
	var meta wire.JobMeta
	json.Unmarshal(metaRaw, &meta)
	return meta, jk, true
}

// jobFor returns the next captured job frame with a wrap for c, skipping others, or fails.
func (c *rawClient) jobFor(ch chan []byte) (wire.JobMeta, *pki.JobKey, []byte) {
	c.t.Helper()
	for {
		body := nextJob(c.t, ch)
		if meta, jk, ok := c.openJob(body); ok {
			return meta, jk, body
		}
	}
}

// Invariants 1 and 2: tampered, foreign-signed, replayed (also after a restart) and expired jobs
// are refused by a real minion.
func TestMinionRefusesBadJobs(t *testing.T) {
	m := master.TestMaster(t)
	jobs := capture(t, m)
	mn := acceptedMinion(t, m, "victim", nil)
	evil := newRaw(t, m, "evil", nil)
	evil.auth("", evil.key)
	m.Keys().Accept("evil", nil, false)
	if ar := evil.auth("", evil.key); ar.Status != wire.StatusAccepted {
		t.Fatalf("evil: %+v", ar)
	}
	out := filepath.Join(t.TempDir(), "count")
	b := bundle(t, map[string]string{"main.hcl": `
exec "count" {
  command = "echo x >> ` + out + `"
}`})
	res := run(t, m, master.JobSpec{Target: "victim", Bundle: b})
	if len(res.Returns) != 1 {
		t.Fatalf("apply: %+v", res)
	}
	body := nextJob(t, jobs)
	victimKey, _ := m.SessionKeyID("victim")
	if jb, _ := wire.SplitJob(body); jb.Wraps() != 1 {
		t.Fatalf("job for one minion with %d wraps", jb.Wraps())
	} else if _, ok := jb.WrapFor(victimKey); !ok {
		t.Fatal("job has no wrap for its minion")
	}

	// Replay of the very job: refused.
	if _, err := mn.OpenJob(body, time.Now()); !errors.Is(err, minion.ErrJobReplay) {
		t.Fatalf("replayed job: %v", err)
	}
	// Tampered: one bit of the ciphertext, or of the signed content re-sealed by a key holder.
	bad := bytes.Clone(body)
	bad[len(bad)-5] ^= 1
	if _, err := mn.OpenJob(bad, time.Now()); err == nil || !strings.Contains(err.Error(), "decrypt") {
		t.Fatalf("tampered job: %v", err)
	}
	// Signed by another key: a co-recipient of a job learns its job key, and re-seals content it
	// signed itself under it, beside the victim's own wrap. The master's signature is missing.
	for len(jobs) > 0 {
		<-jobs
	}
	if _, err := m.Run(context.Background(), master.JobSpec{Kind: wire.JobPing, Target: "victim,evil", Minions: []string{"evil", "victim"}, Timeout: time.Second}, nil); err != nil {
		t.Fatal(err)
	}
	var victimFrame wire.JobBody
	var meta wire.JobMeta
	var jk *pki.JobKey
	for victimFrame.Payload == nil || jk == nil {
		fb := nextJob(t, jobs)
		jb, _ := wire.SplitJob(fb)
		if _, ok := jb.WrapFor(victimKey); ok {
			victimFrame = jb
		}
		if mt, k, ok := evil.openJob(fb); ok {
			meta, jk = mt, k
		}
	}
	meta.JID = "forged"
	meta.Minions = []string{"victim"}
	metaRaw, _ := json.Marshal(meta)
	vw, _ := victimFrame.WrapFor(victimKey)
	forgedBody := wire.JobFrame(&victimFrame.Nonce, []wire.Wrap{{KeyID: victimKey, Key: vw}}, jk.Seal(evil.key.SignAttached(wire.PackJob(metaRaw, nil))))
	if _, err := mn.OpenJob(forgedBody[wire.HeaderLen:], time.Now()); err == nil || !strings.Contains(err.Error(), "signature") {
		t.Fatalf("job signed by another key: %v", err)
	}
	// Expired: a job opened after its expiry (checked before the seen record).
	run(t, m, master.JobSpec{Kind: wire.JobPing, Target: "victim", Timeout: 2 * time.Second})
	pingBody := nextJob(t, jobs)
	for jb, _ := wire.SplitJob(pingBody); ; jb, _ = wire.SplitJob(pingBody) {
		if _, ok := jb.WrapFor(victimKey); ok {
			break
		}
		pingBody = nextJob(t, jobs)
	}
	if _, err := mn.OpenJob(pingBody, time.Now().Add(time.Hour)); !errors.Is(err, minion.ErrJobExpired) {
		t.Fatalf("expired job: %v", err)
	}

	// Replay after a restart: a new minion process on the same data dir cannot open the old job.
	dir := mn.DataDir()
	cnt, _ := os.ReadFile(out)
	if string(cnt) != "x\n" {
		t.Fatalf("exec ran %q", cnt)
	}
	again := minion.TestMinion(t, m.PublishAddr(), m.RequestAddr(), "victim", func(c *minion.Config) { c.DataDir = dir })
	tb.WaitFor(t, 5*time.Second, "restarted victim", func() bool { return again.Status() == "connected" })
	// The new process has a new session key: the old frame has no wrap for it. (A job the
	// master wraps again for it is refused by the seen record on disk: TestSeenJobsPersistAndBound.)
	if _, err := again.OpenJob(body, time.Now()); !errors.Is(err, minion.ErrNotForUs) {
		t.Fatalf("job replayed after restart: %v", err)
	}
}

// Invariants 3, 12, 13: an unaccepted key gets nothing; a public key without its private key
// proves nothing; other protocol versions and bad ids get no answer.
func TestAuthCannotBeFaked(t *testing.T) {
	m := master.TestMaster(t)
	acceptedMinion(t, m, "owner", nil)
	owner, _ := m.Keys().Get("owner")

	// Unaccepted: status pending, no session; requests with a made-up session are refused.
	stranger := newRaw(t, m, "stranger", nil)
	if ar := stranger.auth("", stranger.key); ar.Status != wire.StatusPending || ar.SessionKey != nil || ar.SessionID != nil {
		t.Fatalf("unaccepted minion got %+v", ar)
	}
	stranger.sid, stranger.session = pki.RandomBytes(16), pki.NewSessionKey()
	if r, _, ok := stranger.request(wire.KindSession, nil); !ok || !r.NoSession || r.Body != nil {
		t.Fatalf("made-up session: %+v", r)
	}
	if k, _ := m.Keys().Get("stranger"); k.State != pki.StatePending {
		t.Fatal("a peer moved its own key")
	}

	// Presenting the owner's public key without its private halves: the auth does not even
	// open (it is not sealed by the owner's box key); the refusal is sealed to the owner.
	thief := newRaw(t, m, "owner", nil)
	thief.key = &pki.KeyPair{Pub: owner.Key} // only the public half
	ar := thief.auth("", mustKey(t))
	if ar.Status != "" || ar.SessionKey != nil {
		t.Fatalf("auth without the private key: %+v", ar)
	}
	// A box key of its own but a signature by another key: refused.
	forger := newRaw(t, m, "forger", nil)
	if ar := forger.auth("", mustKey(t)); ar.Status != wire.StatusRefused || ar.SessionKey != nil {
		t.Fatalf("auth signed by another key: %+v", ar)
	}
	if _, ok := m.Keys().Get("forger"); ok {
		t.Fatal("an unproven auth made a key record")
	}
	// Replaying an auth needs a fresh server nonce: a reused one is unknown, and unanswered.
	nonce := pki.RandomBytes(32)
	ch := stranger.hello(nonce)
	authFrame := stranger.sealedAuth(ch, nonce, "", nil, stranger.key)
	stranger.send(authFrame)
	if typ, body, ok := stranger.next(replyWait); !ok || typ != wire.TAuthReply {
		t.Fatal("no answer to a fresh auth")
	} else if ar, ok := stranger.openAuthReply(body); !ok || ar.Status != wire.StatusPending {
		t.Fatalf("fresh auth: %+v", ar)
	}
	stranger.send(authFrame)
	if typ, _, ok := stranger.next(time.Second); ok {
		t.Fatalf("replayed auth answered with %v", typ)
	}

	// Another protocol version, a bad id: no answer at all.
	h, _ := json.Marshal(wire.Hello{ID: "v2", Key: stranger.key.Pub.String(), Nonce: pki.RandomBytes(32)})
	f := wire.Encode(wire.THello, h)
	f[3] = wire.Version + 1
	stranger.send(f)
	for _, id := range []string{"../etc", "a/b", "x\x00y", "UPPER", ""} {
		h, _ := json.Marshal(wire.Hello{ID: id, Key: stranger.key.Pub.String(), Nonce: pki.RandomBytes(32)})
		stranger.send(wire.Encode(wire.THello, h))
	}
	if typ, _, ok := stranger.next(500 * time.Millisecond); ok {
		t.Fatalf("master answered a bad hello with %v", typ)
	}
	if _, err := os.Stat(filepath.Join(m.Config().DataDir, "pki", "etc.json")); err == nil {
		t.Fatal("bad id touched the disk")
	}
	for _, k := range m.Keys().List() {
		if k.ID != "owner" && k.ID != "stranger" {
			t.Fatalf("unexpected key record %q", k.ID)
		}
	}
}

// Invariant 4: a rejected minion loses its session, and with it the key later jobs would be
// wrapped for: it cannot read them.
func TestRejectedMinionCannotReadLaterJobs(t *testing.T) {
	m := master.TestMaster(t)
	jobs := capture(t, m)
	acceptedMinion(t, m, "good", nil)
	bad := newRaw(t, m, "bad", nil)
	bad.auth("", bad.key)
	m.Keys().Accept("bad", nil, false)
	bad.auth("", bad.key)
	if r, _, ok := bad.request(wire.KindHeartbeat, nil); !ok || !r.OK {
		t.Fatal("accepted raw client cannot talk")
	}
	// While accepted, it reads jobs addressed to it.
	if _, err := m.Run(context.Background(), master.JobSpec{Kind: wire.JobPing, Target: "bad,good", Minions: []string{"bad", "good"}, Timeout: time.Second}, nil); err != nil {
		t.Fatal(err)
	}
	bad.jobFor(jobs)
	ids, _ := m.Keys().Reject("bad")
	m.RemoveMinions(ids, false)
	if _, ok := m.SessionKeyID("bad"); ok {
		t.Fatal("rejected minion kept its session")
	}
	for len(jobs) > 0 {
		<-jobs
	}
	run(t, m, master.JobSpec{Kind: wire.JobPing, Target: "good"})
	body := nextJob(t, jobs)
	if _, _, ok := bad.openJob(body); ok {
		t.Fatal("rejected minion found a wrap for its key in a later job")
	}
	jb, _ := wire.SplitJob(body)
	if jb.Wraps() != 1 {
		t.Fatalf("job for one minion with %d wraps", jb.Wraps())
	}
	if r, _, ok := bad.request(wire.KindSession, nil); !ok || !r.NoSession || r.Body != nil {
		t.Fatalf("rejected minion still has a session: %+v", r)
	}
	if ar := bad.auth("", bad.key); ar.Status != wire.StatusRejected || ar.SessionKey != nil {
		t.Fatalf("rejected minion re-auth: %+v", ar)
	}
}

// Invariant 5: each minion's secrets are sealed to it alone.
func TestSecretsSealedPerMinion(t *testing.T) {
	m := master.TestMaster(t)
	os.WriteFile(m.Config().SecretsFile, []byte(`
secret "db" {
  value = "only-for-app"
  target = "group:app"
}
`), 0o600)
	jobs := capture(t, m)
	acceptedMinion(t, m, "app1", []string{"app"})
	spy := newRaw(t, m, "spy", nil)
	spy.auth("", spy.key)
	m.Keys().Accept("spy", []string{"app"}, false)
	spy.auth("", spy.key)
	b := bundle(t, map[string]string{"main.hcl": `
file "s" {
  path    = "` + t.TempDir() + `/${minion.id}"
  content = secret("db")
}`})
	// Addressed to both: the spy reads the job, not app1's secrets.
	run(t, m, master.JobSpec{Target: "app1,spy", Minions: []string{"app1", "spy"}, Bundle: b, Timeout: 2 * time.Second})
	meta, _, _ := spy.jobFor(jobs)
	if len(meta.Secrets["app1"]) == 0 {
		t.Fatal("no secrets sealed for app1")
	}
	if _, ok := spy.key.OpenFrom(spy.master.Box, meta.Secrets["app1"]); ok {
		t.Fatal("another minion opened app1's secrets")
	}
	if bytes.Contains(mustJSON(meta), []byte("only-for-app")) {
		t.Fatal("secret in clear in the job")
	}
	// Addressed to app1 only: the spy cannot read the job at all.
	for len(jobs) > 0 {
		<-jobs
	}
	run(t, m, master.JobSpec{Target: "app1", Bundle: b})
	if _, _, ok := spy.openJob(nextJob(t, jobs)); ok {
		t.Fatal("a minion read a job not addressed to it")
	}
	// A minion outside the secret's target: nothing is sent at all.
	acceptedMinion(t, m, "web1", nil)
	if _, err := m.Run(context.Background(), master.JobSpec{Target: "web1", Minions: []string{"web1"}, Bundle: b, Timeout: time.Second}, nil); err == nil {
		t.Fatal("secret sent to a minion outside its target")
	}
}

func mustJSON(v any) []byte { b, _ := json.Marshal(v); return b }

// Invariants 6, 11, 14 and 17: returns are signed, bound to the session's minion and to jobs
// addressed to it, recorded once; replayed requests are ignored.
func TestForgedReturnsRefused(t *testing.T) {
	m := master.TestMaster(t)
	acceptedMinion(t, m, "honest", nil)
	evil := newRaw(t, m, "evil", nil)
	evil.auth("", evil.key)
	m.Keys().Accept("evil", nil, false)
	evil.auth("", evil.key)
	res := run(t, m, master.JobSpec{Kind: wire.JobPing, Target: "honest"})
	jid := res.JIDs[0]

	ret := func(minion string, signer *pki.KeyPair) wire.SignedReturn {
		data, _ := json.Marshal(wire.Return{JID: jid, Minion: minion, Kind: wire.JobPing, Success: true})
		return wire.SignedReturn{Data: data, Sig: signer.Sign(wire.DomainReturn, data)}
	}
	if r, _, _ := evil.request(wire.KindReturn, ret("honest", evil.key)); r.OK {
		t.Fatal("return for another minion accepted")
	}
	if r, _, _ := evil.request(wire.KindReturn, ret("evil", evil.key)); r.OK {
		t.Fatal("return for a job not addressed to the minion accepted")
	}
	other := mustKey(t)
	if r, _, _ := evil.request(wire.KindReturn, ret("evil", other)); r.OK {
		t.Fatal("return signed by another key accepted")
	}
	d, _ := m.Job(jid)
	if len(d.Returns) != 1 {
		t.Fatalf("job has %d returns", len(d.Returns))
	}
	// A replayed request frame (same sequence number) is not served again.
	r, frame, ok := evil.request(wire.KindFacts, map[string]any{"os": "first"})
	if !ok || !r.OK {
		t.Fatal("facts")
	}
	evil.request(wire.KindFacts, map[string]any{"os": "second"})
	evil.send(frame)
	if _, ok := evil.replyWithin(time.Second); ok {
		t.Fatal("replayed request answered")
	}
	if f := m.Facts("evil"); f["os"] != "second" {
		t.Fatalf("replay changed facts: %v", f["os"])
	}
	// The request's claimed id is irrelevant: facts land on the session's minion.
	if f := m.Facts("honest"); f["os"] != "linux" {
		t.Fatal("facts of another minion changed")
	}
}

// Invariant 10: a token enrols once, into its groups only.
func TestTokenSecondUseAndExpiry(t *testing.T) {
	m := master.TestMaster(t)
	tok, _, _ := m.Tokens().Create(pki.TokenRequest{Groups: []string{"app"}, TTL: time.Hour})
	first := startMinion(t, m, "t1", func(c *minion.Config) { c.Token = tok; c.Groups = []string{"admin"} })
	tb.WaitFor(t, 5*time.Second, "t1 enrolled", func() bool { return first.Status() == "connected" })
	if k, _ := m.Keys().Get("t1"); len(k.Groups) != 1 || k.Groups[0] != "app" {
		t.Fatalf("token groups not enforced: %v", k.Groups)
	}
	second := newRaw(t, m, "t2", nil)
	if ar := second.auth(tok, second.key); ar.Status != wire.StatusPending || ar.SessionKey != nil {
		t.Fatalf("second use of a token: %+v", ar)
	}
	expired, info, _ := m.Tokens().Create(pki.TokenRequest{Groups: []string{"app"}, TTL: time.Nanosecond})
	tb.WaitFor(t, time.Second, "the token's expiry", func() bool { return time.Now().After(info.Expires) })
	third := newRaw(t, m, "t3", nil)
	if ar := third.auth(expired, third.key); ar.Status != wire.StatusPending {
		t.Fatalf("expired token: %+v", ar)
	}
}

// Master key pinning: a minion pinned by fingerprint or by first use refuses another master.
func TestMinionPinsMasterKey(t *testing.T) {
	m := master.TestMaster(t)
	wrong := startMinion(t, m, "p1", func(c *minion.Config) { c.MasterFinger = mustKey(t).Pub.Fingerprint() })
	tb.WaitFor(t, 5*time.Second, "pin refusal", func() bool { return wrong.Status() == minion.ErrMasterKeyChanged.Error() })
	if _, ok := m.Keys().Get("p1"); ok {
		t.Fatal("minion authenticated to a master that does not match master_finger")
	}
	right := startMinion(t, m, "p2", func(c *minion.Config) { c.MasterFinger = m.Key().Fingerprint() })
	tb.WaitFor(t, 5*time.Second, "p2 pending", func() bool { _, ok := m.Keys().Get("p2"); return ok })
	_ = right

	// Trust on first use, then an impostor master on another address.
	tofu := startMinion(t, m, "p3")
	tb.WaitFor(t, 5*time.Second, "p3 pinned", func() bool { _, ok := m.Keys().Get("p3"); return ok })
	dir := tofu.DataDir()
	impostor := master.TestMaster(t)
	moved := minion.TestMinion(t, impostor.PublishAddr(), impostor.RequestAddr(), "p3", func(c *minion.Config) { c.DataDir = dir })
	tb.WaitFor(t, 5*time.Second, "impostor refused", func() bool { return moved.Status() == minion.ErrMasterKeyChanged.Error() })
	if _, ok := impostor.Keys().Get("p3"); ok {
		t.Fatal("pinned minion authenticated to an impostor")
	}
}

// Invariants 8 and 9: garbage and oversized frames on both ports while a real apply goes on; a
// bundle path escaping its root is refused.
func TestGarbageDuringApply(t *testing.T) {
	m := master.TestMaster(t)
	acceptedMinion(t, m, "busy", nil)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		greeting := make([]byte, 64)
		greeting[0], greeting[9], greeting[10] = 0xff, 0x7f, 3
		copy(greeting[12:], "NULL")
		huge := []byte{0x06, 0x40, 0, 0, 0, 0, 0, 0, 0}
		payloads := [][]byte{
			[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
			append(bytes.Clone(greeting), huge...),
			append(bytes.Clone(greeting), 0xff, 0xff, 0xff),
			pki.RandomBytes(4096),
		}
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			for _, addr := range []string{m.PublishAddr(), m.RequestAddr()} {
				c, err := net.DialTimeout("tcp", addr, time.Second)
				if err != nil {
					continue
				}
				c.SetDeadline(time.Now().Add(200 * time.Millisecond))
				c.Write(payloads[i%len(payloads)])
				c.Close()
			}
			// Well-formed ZMTP carrying junk, an old version, and an oversized message.
			d := zmq4.NewDealer(context.Background(), zmq4.WithLogger(log.New(io.Discard, "", 0)), zmq4.WithDialerMaxRetries(0), zmq4.WithTimeout(time.Second))
			if d.Dial(zmtp.Endpoint(m.RequestAddr(), 1<<20)) == nil {
				d.Send(zmq4.NewMsg(pki.RandomBytes(100)))
				d.Send(zmq4.NewMsg([]byte("brn\x00\x05junk")))
				d.Send(zmq4.NewMsgFrom([]byte("a"), []byte("b"), []byte("c")))
				if i%5 == 0 {
					d.Send(zmq4.NewMsg(make([]byte, wire.MaxRequestFrame+4096)))
				}
			}
			d.Close()
		}
	}()
	out := t.TempDir()
	for i := range 3 {
		b := bundle(t, map[string]string{"main.hcl": `
file "f" {
  path    = "` + out + `/f"
  content = "` + string(rune('a'+i)) + `"
}`})
		res := run(t, m, master.JobSpec{Target: "busy", Bundle: b})
		if len(res.Returns) != 1 || !res.Returns["busy"].Success {
			t.Fatalf("apply %d under garbage: %+v", i, res)
		}
	}
	close(stop)
	<-done

	// A bundle whose paths escape its root never compiles, so nothing is sent.
	esc := bundle(t, map[string]string{"main.hcl": `
file "x" {
  path   = "` + out + `/x"
  source = "../../../etc/passwd"
}`})
	if _, err := m.Run(context.Background(), master.JobSpec{Target: "busy", Minions: []string{"busy"}, Bundle: esc, Timeout: time.Second}, nil); err == nil {
		t.Fatal("escaping source was sent")
	}
	if _, err := states.UnmarshalBundle((&states.Bundle{Files: map[string][]byte{"../evil": []byte("x")}}).Marshal()); err == nil {
		t.Fatal("bundle with ../ unpacked")
	}
}

// A return is bounded by its job's kind, not by what the minion says it is: a compromised
// minion cannot store 16 MiB frames as ping returns (each kept in the job store), nor pass one
// off as an apply's. Checked while the job's copies are kept and after (from the store).
func TestReturnBoundedByJobKind(t *testing.T) {
	m := master.TestMaster(t)
	evil := evilMinion(t, m, "evil", nil, nil)
	published := make(chan string, 1)
	done := make(chan *master.Result, 1)
	go func() {
		res, err := m.Run(context.Background(), master.JobSpec{Kind: wire.JobPing, Target: "evil", Minions: []string{"evil"}, Timeout: 30 * time.Second},
			func(e master.Event) {
				if e.Event == "published" {
					published <- e.JID
				}
			})
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	jid := <-published
	ret := func(kind string, pad int) wire.SignedReturn {
		data, _ := json.Marshal(wire.Return{JID: jid, Minion: "evil", Kind: kind, Success: true, Error: strings.Repeat("x", pad)})
		return wire.SignedReturn{Data: data, Sig: evil.key.Sign(wire.DomainReturn, data)}
	}
	refused := func(what string, sr wire.SignedReturn, want string) {
		t.Helper()
		r, _, ok := evil.request(wire.KindReturn, sr)
		if !ok || r.OK || !strings.Contains(r.Error, want) {
			t.Fatalf("%s: answered %v, ok %v, error %q (want it refused with %q)", what, ok, r.OK, r.Error, want)
		}
	}
	refused("a 1 MiB ping return", ret(wire.JobPing, 1<<20), "at most")
	refused("a large return passed off as an apply's", ret(wire.JobApply, 1<<20), `"apply" job`)
	if r, _, ok := evil.request(wire.KindReturn, ret(wire.JobPing, 0)); !ok || !r.OK {
		t.Fatalf("a ping's return refused: %+v", r)
	}
	if res := <-done; len(res.Returns) != 1 || len(res.Missing) != 0 {
		t.Fatalf("ping: %+v", res)
	}
	// Every minion returned: the job's copies are gone, and its kind comes from the store.
	refused("a 1 MiB ping return after the job", ret(wire.JobPing, 1<<20), "at most")
	rs, err := m.Store().Returns(jid)
	if err != nil || len(rs) != 1 || len(rs[0].Data) > 4096 {
		t.Fatalf("stored returns: %d, %v", len(rs), err)
	}
}
