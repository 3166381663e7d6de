package master_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/brinecm/brine/internal/tb"
	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/master"
	"github.com/brinecm/brine/minion"
	"github.com/brinecm/brine/pki"
)

// recorder is a TCP relay in front of one of the master's ports that keeps every byte crossing
// it, both ways, as a network observer would see them.
type recorder struct {
	ln net.Listener
	wg sync.WaitGroup

	mu    sync.Mutex // guards the fields below
	buf   bytes.Buffer
	conns []net.Conn
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.Write(p)
}

func (r *recorder) bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.buf.Bytes())
}

func (r *recorder) track(c net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conns == nil {
		return false // closed
	}
	r.conns = append(r.conns, c)
	return true
}

func record(t *testing.T, target string) *recorder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{ln: ln, conns: []net.Conn{}}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			if !r.track(c) || !r.track(up) {
				c.Close()
				up.Close()
				return
			}
			for _, pair := range [][2]net.Conn{{up, c}, {c, up}} {
				r.wg.Add(1)
				go func(dst, src net.Conn) {
					defer r.wg.Done()
					_, _ = io.Copy(io.MultiWriter(dst, r), src)
					dst.Close()
					src.Close()
				}(pair[0], pair[1])
			}
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		r.mu.Lock()
		for _, c := range r.conns {
			c.Close()
		}
		r.conns = nil
		r.mu.Unlock()
		r.wg.Wait()
	})
	return r
}

// Invariant 19, on the wire: everything of a token enrolment, a facts report, a job with a
// --var value and a return carrying a diff crosses ports 4505 and 4506 (here through recording
// relays, over real TCP, between a real master and a real minion) without one of those values
// in clear.
func TestTrafficIsConfidential(t *testing.T) {
	m := master.TestMaster(t)
	pubRec := record(t, m.PublishAddr())
	reqRec := record(t, m.RequestAddr())
	mark := func(what string) string { return what + "-" + hex.EncodeToString(pki.RandomBytes(8)) }
	factValue, varValue, oldContent, groupAsked := mark("factvalue"), mark("varvalue"), mark("oldcontent"), mark("groupasked")
	tok, _, err := m.Tokens().Create(pki.TokenRequest{ID: "conf1", Groups: []string{"app"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	mn := minion.TestMinion(t, pubRec.ln.Addr().String(), reqRec.ln.Addr().String(), "conf1", func(c *minion.Config) {
		c.Token = tok
		c.Groups = []string{groupAsked}
		c.FactsFunc = func() map[string]any { return map[string]any{"os": "linux", "secret_fact": factValue} }
	})
	tb.WaitFor(t, 10*time.Second, "conf1 enrolled with the token and reporting facts", func() bool {
		return mn.Status() == "connected" && m.Facts("conf1")["secret_fact"] == factValue
	})

	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	if err := os.WriteFile(path, []byte(oldContent+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	b := bundle(t, map[string]string{"main.hcl": `
variable "v" { type = string }
file "f" {
  path    = "` + path + `"
  content = "new ${var.v}\n"
}`})
	res := run(t, m, master.JobSpec{Target: "conf1", Bundle: b, Vars: map[string]string{"v": varValue}})
	ret, ok := res.Returns["conf1"]
	if !ok || !ret.Success {
		t.Fatalf("apply: %+v", res)
	}
	// The values did travel: the return's diff holds the old content, the file the var value.
	if !bytes.Contains(ret.Report, []byte(oldContent)) {
		t.Fatalf("the return carries no diff of the old content: %s", ret.Report)
	}
	if got, _ := os.ReadFile(path); string(got) != "new "+varValue+"\n" {
		t.Fatalf("file: %q", got)
	}

	pub, req := pubRec.bytes(), reqRec.bytes()
	// The capture sees what is in clear: the hello names the minion, the job was published.
	if !bytes.Contains(req, []byte("conf1")) {
		t.Fatal("the capture of port 4506 does not even show the hello's id: it captures nothing")
	}
	if len(pub) < len(b.Marshal()) {
		t.Fatalf("the capture of port 4505 holds %d bytes, less than the bundle", len(pub))
	}
	for name, v := range map[string]string{"token": tok, "fact value": factValue, "--var value": varValue,
		"diff": oldContent, "requested group": groupAsked} {
		for port, data := range map[string][]byte{"4505 (publish)": pub, "4506 (request)": req} {
			if bytes.Contains(data, []byte(v)) {
				t.Errorf("the %s crosses port %s in clear", name, port)
			}
		}
	}
}

// pubFrame is a published frame with its topic.
type pubFrame struct {
	topic string
	body  []byte // the TJob body
}

// captureTopics keeps every job published from now on with its topic, as an observer on the
// publish port's path sees them.
func captureTopics(t *testing.T, m *master.Master) chan pubFrame {
	t.Helper()
	tap := m.Published(t)
	ch := make(chan pubFrame, 256)
	go func() {
		for msg := range tap {
			if typ, body, err := wire.Decode(msg[1], wire.MaxJobFrame); err == nil && typ == wire.TJob {
				ch <- pubFrame{topic: string(msg[0]), body: body}
			}
		}
	}()
	return ch
}

// Invariant 19 for jobs split per bucket (more than 32 minions): each bucket's copy carries the
// wraps of that bucket's addressed minions only; every addressed minion opens exactly its copy,
// which names only its bucket's minions; accepted minions that are not addressed (some of them
// in the same buckets) find no wrap and cannot read any copy.
func TestBucketJobReadOnlyByItsMinions(t *testing.T) {
	m := master.TestMaster(t, func(c *master.Config) { c.PreAuthRatePerSource, c.PreAuthRate = 100000, 100000 })
	jobs := captureTopics(t, m)
	const n, addressedN = 40, 36
	clients := map[string]*rawClient{}
	var addressed []string
	for i := range n {
		id := "b" + string(rune('a'+i/26)) + string(rune('a'+i%26))
		c := newRaw(t, m, id, nil)
		// Accepted by the operator beforehand: 40 new keys from one address would meet the
		// enrolment rate limits.
		if _, err := m.Keys().Present(pki.Presentation{ID: id, Key: c.key.Pub, Source: "operator"}, true, nil); err != nil {
			t.Fatal(err)
		}
		if ar := c.auth("", c.key); ar.Status != wire.StatusAccepted {
			t.Fatalf("%s: %+v", id, ar)
		}
		clients[id] = c
		if i < addressedN {
			addressed = append(addressed, id)
		}
	}
	buckets := map[string]bool{}
	for _, id := range addressed {
		buckets[wire.TopicBucket(wire.BucketOf(id))] = true
	}
	if _, err := m.Run(context.Background(), master.JobSpec{Kind: wire.JobPing, Target: "b*", Minions: addressed, Timeout: 500 * time.Millisecond}, nil); err != nil {
		t.Fatal(err)
	}
	var frames []pubFrame
	for len(frames) < len(buckets) {
		select {
		case f := <-jobs:
			frames = append(frames, f)
		case <-time.After(5 * time.Second):
			t.Fatalf("captured %d job frames, want %d (one per bucket)", len(frames), len(buckets))
		}
	}
	opened := map[string]int{}
	wraps := 0
	for _, f := range frames {
		if !buckets[f.topic] {
			t.Fatalf("job frame on topic %q", f.topic)
		}
		jb, err := wire.SplitJob(f.body)
		if err != nil {
			t.Fatal(err)
		}
		wraps += jb.Wraps()
		var jk *pki.JobKey
		for id, c := range clients {
			meta, k, ok := c.openJob(f.body)
			if !ok {
				continue
			}
			if i := indexOf(addressed, id); i < 0 {
				t.Fatalf("%s is not addressed and read a job", id)
			}
			if wire.TopicBucket(wire.BucketOf(id)) != f.topic {
				t.Fatalf("%s found a wrap in another bucket's copy", id)
			}
			for _, other := range meta.Minions {
				if wire.TopicBucket(wire.BucketOf(other)) != f.topic || indexOf(addressed, other) < 0 {
					t.Fatalf("the copy for %s names %s", f.topic, other)
				}
			}
			if jk != nil && *jk != *k {
				t.Fatal("two job keys in one frame")
			}
			jk = k
			opened[id]++
		}
	}
	if wraps != addressedN {
		t.Fatalf("%d wraps for %d addressed minions", wraps, addressedN)
	}
	for _, id := range addressed {
		if opened[id] != 1 {
			t.Fatalf("%s opened %d copies of the job", id, opened[id])
		}
	}
}

func indexOf(xs []string, x string) int {
	for i, y := range xs {
		if y == x {
			return i
		}
	}
	return -1
}

// Requests are sealed under the session's key: a tampered one, one sealed under another
// session's key, a reply reflected back as a request and a replayed one are all refused without
// an answer, and change nothing; the session goes on.
func TestTamperedRequestsRefused(t *testing.T) {
	m := master.TestMaster(t)
	accept := func(id string) *rawClient {
		c := newRaw(t, m, id, nil)
		c.auth("", c.key)
		m.Keys().Accept(id, nil, false)
		if ar := c.auth("", c.key); ar.Status != wire.StatusAccepted {
			t.Fatalf("%s: %+v", id, ar)
		}
		return c
	}
	victim, other := accept("victim"), accept("other")
	if r, _, ok := victim.request(wire.KindFacts, map[string]any{"os": "first"}); !ok || !r.OK {
		t.Fatal("facts")
	}
	silent := func(what string, frame []byte) {
		t.Helper()
		victim.send(frame)
		if typ, _, ok := victim.next(700 * time.Millisecond); ok {
			t.Fatalf("%s answered with %v", what, typ)
		}
		if f := m.Facts("victim"); f["os"] != "first" {
			t.Fatalf("%s changed facts to %v", what, f["os"])
		}
	}
	// One bit flipped anywhere in the sealed part, or in the key id.
	good := victim.requestFrame(wire.KindFacts, map[string]any{"os": "tampered"})
	for _, at := range []int{wire.HeaderLen + wire.SessionIDLen, wire.HeaderLen + wire.SessionIDLen + wire.KeyIDLen + 3, len(good) / 2, len(good) - 1} {
		bad := bytes.Clone(good)
		bad[at] ^= 0x10
		silent("a tampered request", bad)
	}
	// Sealed under another session's key (a minion that knows the victim's session id).
	stolen := other.requestFrame(wire.KindFacts, map[string]any{"os": "other's"})
	_, _, sealed, _ := wire.SplitSession(stolen[wire.HeaderLen:])
	silent("a request under another session's key", wire.SessionFrame(wire.TRequest, victim.sid, other.session.ID, sealed))
	silent("a request with the victim's key id and another key's box", wire.SessionFrame(wire.TRequest, victim.sid, victim.session.ID, sealed))
	// A reply reflected back at the master as a request: same key, another tag.
	victim.send(victim.requestFrame(wire.KindHeartbeat, nil))
	typ, replyBody, ok := victim.next(replyWait)
	if !ok || typ != wire.TReply {
		t.Fatal("no reply to a heartbeat")
	}
	silent("a reflected reply", wire.Encode(wire.TRequest, replyBody))
	// A replayed request: its sequence number is spent.
	r, frame, ok := victim.request(wire.KindFacts, map[string]any{"os": "second"})
	if !ok || !r.OK {
		t.Fatal("facts after the attempts")
	}
	victim.send(frame)
	if _, ok := victim.replyWithin(time.Second); ok {
		t.Fatal("replayed request answered")
	}
	// The session is intact.
	if r, _, ok := victim.request(wire.KindHeartbeat, nil); !ok || !r.OK {
		t.Fatal("session broken by the attempts")
	}
	if f := m.Facts("victim"); f["os"] != "second" {
		t.Fatalf("facts %v", f["os"])
	}
}

// Rotation: a new key generation gives every connected minion a new session key of its own
// (fetched over its session, sealed to its box key); jobs go on, and the old key opens no later
// job. Each minion's key differs from every other's.
func TestSessionKeysRotate(t *testing.T) {
	m := master.TestMaster(t)
	jobs := capture(t, m)
	acceptedMinion(t, m, "r1", nil)
	acceptedMinion(t, m, "r2", nil)
	k1, _ := m.SessionKeyID("r1")
	k2, _ := m.SessionKeyID("r2")
	if k1 == k2 {
		t.Fatal("two minions share a session key")
	}
	raw := newRaw(t, m, "r3", nil)
	raw.auth("", raw.key)
	m.Keys().Accept("r3", nil, false)
	raw.auth("", raw.key)
	old := raw.session
	gen := m.KeyGeneration()
	m.RotateSessionKeys()
	if m.KeyGeneration() == gen {
		t.Fatal("no new key generation")
	}
	tb.WaitFor(t, 10*time.Second, "real minions fetch new keys", func() bool {
		n1, ok1 := m.SessionKeyID("r1")
		n2, ok2 := m.SessionKeyID("r2")
		return ok1 && ok2 && n1 != k1 && n2 != k2
	})
	// The raw client asks for its new key as a minion does: the reply names the new
	// generation, KindSession brings the key, sealed to its box key.
	r, _, ok := raw.request(wire.KindHeartbeat, nil)
	if !ok || !r.OK {
		t.Fatal("heartbeat")
	}
	if g := m.KeyGeneration(); !bytes.Equal(r.KeyGen, g[:]) {
		t.Fatalf("reply names key generation %x, want %x", r.KeyGen, g)
	}
	r, _, ok = raw.request(wire.KindSession, nil)
	if !ok || !r.OK {
		t.Fatalf("session: %+v", r)
	}
	var sb wire.SessionBody
	if err := json.Unmarshal(r.Body, &sb); err != nil {
		t.Fatal(err)
	}
	plain, ok := raw.key.OpenFrom(raw.master.Box, sb.SessionKey)
	if !ok {
		t.Fatal("the new session key is not sealed to the minion")
	}
	fresh, err := pki.UnmarshalSessionKey(plain)
	if err != nil || fresh.ID == old.ID {
		t.Fatalf("new key %v %v", fresh, err)
	}
	raw.session = fresh
	if r, _, ok := raw.request(wire.KindHeartbeat, nil); !ok || !r.OK {
		t.Fatal("request under the new key")
	}
	// A later job for r3 is wrapped for the new key, not the old.
	for len(jobs) > 0 {
		<-jobs
	}
	if _, err := m.Run(context.Background(), master.JobSpec{Kind: wire.JobPing, Target: "r1,r2,r3", Minions: []string{"r1", "r2", "r3"}, Timeout: time.Second}, nil); err != nil {
		t.Fatal(err)
	}
	raw.jobFor(jobs)
	stale := &rawClient{t: t, session: old, master: raw.master}
	for len(jobs) > 0 {
		if _, _, ok := stale.openJob(nextJob(t, jobs)); ok {
			t.Fatal("the key before the rotation opened a later job")
		}
	}
	res := run(t, m, master.JobSpec{Kind: wire.JobPing, Target: "r1,r2"})
	if len(res.Returns) != 2 {
		t.Fatalf("ping after rotation: %+v", res)
	}
}

// A sealed auth is bounded before any cryptography (an unauthenticated peer sends it): an
// oversized one gets no answer and does not even spend the challenge; one that does not open is
// refused, sealed to the key of the hello, and makes no key record.
func TestSealedAuthBoundedAndChecked(t *testing.T) {
	m := master.TestMaster(t)
	c := newRaw(t, m, "bounded", nil)
	nonce := pki.RandomBytes(32)
	ch := c.hello(nonce)
	// Over the master's bound on a sealed auth, under the transport's pre-auth frame limit (which
	// drops larger frames before the master sees them).
	c.send(wire.Encode(wire.TAuth, wire.AuthFrame(ch.ServerNonce, pki.RandomBytes(12<<10))))
	if typ, _, ok := c.next(700 * time.Millisecond); ok {
		t.Fatalf("oversized auth answered with %v", typ)
	}
	c.send(c.sealedAuth(ch, nonce, "", nil, c.key))
	typ, body, ok := c.next(replyWait)
	if !ok || typ != wire.TAuthReply {
		t.Fatal("the challenge was spent by an oversized auth")
	}
	if ar, ok := c.openAuthReply(body); !ok || ar.Status != wire.StatusPending {
		t.Fatalf("auth after the oversized one: %+v", ar)
	}

	junk := newRaw(t, m, "junk", nil)
	nonce = pki.RandomBytes(32)
	ch = junk.hello(nonce)
	junk.send(wire.Encode(wire.TAuth, wire.AuthFrame(ch.ServerNonce, pki.RandomBytes(300))))
	typ, body, ok = junk.next(replyWait)
	if !ok || typ != wire.TAuthReply {
		t.Fatal("no answer to an auth that does not open")
	}
	if ar, ok := junk.openAuthReply(body); !ok || ar.Status != wire.StatusRefused || ar.SessionKey != nil {
		t.Fatalf("auth that does not open: %+v", ar)
	}
	if _, ok := m.Keys().Get("junk"); ok {
		t.Fatal("an auth that does not open made a key record")
	}
}
