package master_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/brinecm/brine/control"
	"github.com/brinecm/brine/internal/tb"
	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/master"
	"github.com/brinecm/brine/minion"
	"github.com/brinecm/brine/pki"
)

// authFrame runs hello -> challenge for c and returns its sealed auth frame asking for groups
// with token, without sending it.
func (c *rawClient) authFrame(token string, groups []string) []byte {
	c.t.Helper()
	nonce := pki.RandomBytes(32)
	ch := c.hello(nonce)
	return c.sealedAuth(ch, nonce, token, groups, c.key)
}

// authReply waits for the master's answer to an auth frame; ok is false without one.
func (c *rawClient) authReply() (wire.AuthReply, bool) {
	typ, body, ok := c.next(5 * time.Second)
	if !ok || typ != wire.TAuthReply {
		return wire.AuthReply{}, false
	}
	return c.openAuthReply(body)
}

// authAs runs the whole handshake asking for groups, with token.
func (c *rawClient) authAs(token string, groups ...string) wire.AuthReply {
	c.t.Helper()
	c.send(c.authFrame(token, groups))
	ar, ok := c.authReply()
	if !ok {
		c.t.Fatal("no auth reply")
	}
	return ar
}

func idToken(t *testing.T, m *master.Master, id string, groups ...string) string {
	t.Helper()
	tok, _, err := m.Tokens().Create(pki.TokenRequest{ID: id, Groups: groups, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func liveTokens(t *testing.T, m *master.Master) int {
	t.Helper()
	ts, err := m.Tokens().List()
	if err != nil {
		t.Fatal(err)
	}
	return len(ts)
}

// Invariants 10 and 13: a peer that registers a droplet's id before the droplet does burns
// nothing and gains nothing. Its key stays pending (with its requested groups never granted),
// a wrong token from it spends nothing, the droplet's token then takes the id over, and the
// squatter is denied from then on; `key accept` of the id has nothing left to accept.
func TestSquatterDoesNotBurnToken(t *testing.T) {
	m := master.TestMaster(t)
	tok := idToken(t, m, "drop1", "web")
	squatter := newRaw(t, m, "drop1", nil)
	if ar := squatter.authAs("", "admin"); ar.Status != wire.StatusPending || ar.SessionKey != nil {
		t.Fatalf("squatter: %+v", ar)
	}
	forged := strings.Replace(tok, tok[len(tok)-4:], "aaaa", 1)
	if ar := squatter.authAs(forged, "admin"); ar.Status != wire.StatusPending {
		t.Fatalf("squatter with a forged token: %+v", ar)
	}
	if n := liveTokens(t, m); n != 1 {
		t.Fatalf("the squatter spent the token (%d left)", n)
	}

	// The droplet: a real minion with the token and nothing else (no master_finger: the token
	// pins the master).
	drop := startMinion(t, m, "drop1", func(c *minion.Config) { c.Token = tok; c.Groups = []string{"admin"} })
	tb.WaitFor(t, 10*time.Second, "the droplet enrolled", func() bool { return drop.Status() == "connected" })
	rec, _ := m.Keys().Get("drop1")
	if rec.State != pki.StateAccepted || !rec.Key.Equal(drop.Key()) || strings.Join(rec.Groups, ",") != "web" {
		t.Fatalf("drop1: %+v", rec)
	}
	if n := liveTokens(t, m); n != 0 {
		t.Fatalf("token not spent after the enrolment (%d left)", n)
	}
	var denied *pki.MinionKey
	for _, k := range m.Keys().List() {
		if k.ID == "drop1" && k.State == pki.StateDenied {
			denied = &k
		}
	}
	if denied == nil || !denied.Key.Equal(squatter.key.Pub) {
		t.Fatalf("the squatter's key is not on record as denied: %+v", m.Keys().List())
	}
	if ar := squatter.authAs("", "admin"); ar.Status != string(pki.StateDenied) || ar.SessionKey != nil {
		t.Fatalf("squatter after the takeover: %+v", ar)
	}
	r, err := m.Client().KeyAccept(context.Background(), control.KeyAcceptRequest{Glob: "drop1"})
	if err != nil || len(r.IDs) != 0 {
		t.Fatalf("key accept after the takeover accepted %v (%v)", r.IDs, err)
	}
	if rec, _ := m.Keys().Get("drop1"); !rec.Key.Equal(drop.Key()) || strings.Join(rec.Groups, ",") != "web" {
		t.Fatalf("drop1 changed: %+v", rec)
	}
}

// Invariant 13: the groups a minion asks for never reach an accepted key: not through
// `brine key accept` without --groups, not through auto_accept, not through a token.
func TestRequestedGroupsNeverGranted(t *testing.T) {
	m := master.TestMaster(t)
	asker := newRaw(t, m, "asker", nil)
	asker.authAs("", "admin", "db")
	r, err := m.Client().KeyAccept(context.Background(), control.KeyAcceptRequest{Glob: "asker"})
	if err != nil || len(r.Keys) != 1 {
		t.Fatalf("accept: %+v %v", r, err)
	}
	if k := r.Keys[0]; len(k.Groups) != 0 || k.Finger != asker.key.Pub.Fingerprint() || k.Source != "127.0.0.1" || k.Created.IsZero() {
		t.Fatalf("accepted key as shown: %+v", k)
	}
	if ar := asker.authAs("", "admin"); ar.Status != wire.StatusAccepted || len(ar.Groups) != 0 {
		t.Fatalf("accepted asker: %+v", ar)
	}
	if ids, _ := m.ResolveTarget("group:admin or group:db"); len(ids) != 0 {
		t.Fatalf("requested groups granted to %v", ids)
	}
	// The operator grants groups explicitly.
	if _, err := m.Client().KeyGroups(context.Background(), control.KeyGroupsRequest{Glob: "asker", Groups: []string{"app"}}); err != nil {
		t.Fatal(err)
	}
	if ids, _ := m.ResolveTarget("group:app"); strings.Join(ids, ",") != "asker" {
		t.Fatalf("group:app = %v", ids)
	}

	lab := master.TestMaster(t, func(c *master.Config) { c.AutoAccept = true })
	mn := startMinion(t, lab, "labby", func(c *minion.Config) { c.Groups = []string{"admin"} })
	tb.WaitFor(t, 10*time.Second, "labby connected", func() bool { return mn.Status() == "connected" })
	if k, _ := lab.Keys().Get("labby"); len(k.Groups) != 0 {
		t.Fatalf("auto_accept granted requested groups %v", k.Groups)
	}
	tok := idToken(t, lab, "tokened", "web")
	tk := newRaw(t, lab, "tokened", nil)
	if ar := tk.authAs(tok, "admin"); ar.Status != wire.StatusAccepted || strings.Join(ar.Groups, ",") != "web" {
		t.Fatalf("token enrolment: %+v", ar)
	}
}

// A flood of new ids from one source is bounded (pending keys and their files) and refused
// without a write, and a legitimate enrolment from that very source still goes through.
func TestPendingFloodBounded(t *testing.T) {
	// The transport's own per-source message rate would slow the flood down: lift it, so that
	// the key store's bounds are what is tested.
	m := master.TestMaster(t, func(c *master.Config) { c.PreAuthRatePerSource, c.PreAuthRate = 100000, 100000 })
	flood := newRaw(t, m, "x", nil)
	const n = 300
	refused := 0
	start := time.Now()
	for i := range n {
		flood.id = "flood-" + strconv.Itoa(i)
		ar := flood.authAs("")
		switch ar.Status {
		case wire.StatusPending:
		case wire.StatusRefused:
			refused++
		default:
			t.Fatalf("flood auth %d: %+v", i, ar)
		}
	}
	elapsed := time.Since(start)
	total, fromSrc := m.Keys().Pending("127.0.0.1")
	files, _ := os.ReadDir(filepath.Join(m.Config().DataDir, "pki", "minions"))
	t.Logf("%d presentations in %v: %d pending, %d files, %d refused", n, elapsed.Round(time.Millisecond), total, len(files), refused)
	// The per-source rate (20 at once, then 1/s) bounds the flood well below the per-source cap.
	if limit := 20 + int(elapsed.Seconds()) + 2; total > limit || fromSrc != total || len(files) != total || refused < n-limit {
		t.Fatalf("flood not bounded: %d pending (%d from the source, limit %d), %d files, %d refused", total, fromSrc, limit, len(files), refused)
	}
	// A token enrolment from the same address is not subject to the pending bounds.
	tok := idToken(t, m, "legit", "app")
	mn := startMinion(t, m, "legit", func(c *minion.Config) { c.Token = tok })
	tb.WaitFor(t, 10*time.Second, "legit enrolled during the flood", func() bool { return mn.Status() == "connected" })

	// The per-source cap holds whatever the rate: with the cap at 5, the sixth is refused.
	capped := master.TestMaster(t, func(c *master.Config) { c.MaxPendingPerSource = 5 })
	c := newRaw(t, capped, "x", nil)
	for i := range 8 {
		c.id = "cap-" + strconv.Itoa(i)
		ar := c.authAs("")
		if want := i < 5; (ar.Status == wire.StatusPending) != want {
			t.Fatalf("presentation %d: %+v", i, ar)
		}
		if i >= 5 && !strings.Contains(ar.Reason, "too many") {
			t.Fatalf("refusal says %q", ar.Reason)
		}
	}
}

// burst prepares an auth for each id (hello and challenge first, spread over conns
// connections), then sends them all at once, so that the registrar decides them in batches; it
// returns the replies by id.
func burst(t *testing.T, m *master.Master, conns int, ids []string, tokens map[string]string) map[string]wire.AuthReply {
	t.Helper()
	cs := make([]*rawClient, conns)
	for i := range cs {
		cs[i] = newRaw(t, m, "", nil)
	}
	frames := make([][][]byte, conns)
	byNonce := map[string]string{}
	for k, id := range ids {
		c := cs[k%conns]
		c.id = id
		nonce := pki.RandomBytes(32)
		frames[k%conns] = append(frames[k%conns], c.sealedAuth(c.hello(nonce), nonce, tokens[id], nil, c.key))
		byNonce[string(nonce)] = id
	}
	for i, c := range cs {
		for _, f := range frames[i] {
			c.send(f)
		}
	}
	out := map[string]wire.AuthReply{}
	for i, c := range cs {
		for range frames[i] {
			ar, ok := c.authReply()
			if !ok {
				t.Fatalf("connection %d: an auth got no reply", i)
			}
			out[byNonce[string(ar.ClientNonce)]] = ar
		}
	}
	if len(out) != len(ids) {
		t.Fatalf("%d replies for %d ids", len(out), len(ids))
	}
	return out
}

// A burst of new ids from many connections at once, registered in group commits, is bounded as
// one presentation at a time is: the pending keys by the per-source rate (a burst of 20) and
// the per-source cap, a file each and no more, a token enrolment in the same burst goes
// through, and the refusals take nothing from the rate limit.
func TestPendingBurstBounded(t *testing.T) {
	m := master.TestMaster(t, func(c *master.Config) { c.PreAuthRatePerSource, c.PreAuthRate = 100000, 100000 })
	var ids []string
	for i := range 200 {
		ids = append(ids, "burst-"+strconv.Itoa(i))
	}
	start := time.Now()
	replies := burst(t, m, 20, ids, nil)
	elapsed := time.Since(start)
	pending := 0
	for id, ar := range replies {
		switch ar.Status {
		case wire.StatusPending:
			pending++
		case wire.StatusRefused:
		default:
			t.Fatalf("%s: %+v", id, ar)
		}
	}
	total, fromSrc := m.Keys().Pending("127.0.0.1")
	files, _ := os.ReadDir(filepath.Join(m.Config().DataDir, "pki", "minions"))
	t.Logf("a burst of %d in %v: %d pending, %d files", len(ids), elapsed.Round(time.Millisecond), total, len(files))
	if limit := 20 + int(elapsed.Seconds()) + 2; total != pending || fromSrc != total || total > limit || len(files) != total {
		t.Fatalf("burst not bounded: %d pending (%d from the source, %d answered pending, limit %d), %d files", total, fromSrc, pending, limit, len(files))
	}

	// The per-source cap holds within a burst, refusals spend no token, and once the cap is
	// raised the rate limit still has what the refusals did not take.
	capped := master.TestMaster(t, func(c *master.Config) {
		c.MaxPendingPerSource, c.PreAuthRatePerSource, c.PreAuthRate = 5, 100000, 100000
	})
	tok := idToken(t, capped, "legit", "app")
	ids = []string{"legit"}
	for i := range 30 {
		ids = append(ids, "cap-"+strconv.Itoa(i))
	}
	replies = burst(t, capped, 4, ids, map[string]string{"legit": tok})
	if ar := replies["legit"]; ar.Status != wire.StatusAccepted || strings.Join(ar.Groups, ",") != "app" {
		t.Fatalf("token enrolment in a burst: %+v", ar)
	}
	pending = 0
	for id, ar := range replies {
		if id == "legit" {
			continue
		}
		if ar.Status == wire.StatusPending {
			pending++
		} else if ar.Status != wire.StatusRefused || !strings.Contains(ar.Reason, "too many") {
			t.Fatalf("%s: %+v", id, ar)
		}
	}
	if total, _ := capped.Keys().Pending("127.0.0.1"); pending != 5 || total != 5 {
		t.Fatalf("capped burst: %d answered pending, %d pending; want 5", pending, total)
	}
	capped.Keys().SetLimits(pki.PendingLimits{PerSource: 100})
	ids = nil
	for i := range 15 {
		ids = append(ids, "after-"+strconv.Itoa(i))
	}
	for id, ar := range burst(t, capped, 3, ids, nil) {
		if ar.Status != wire.StatusPending {
			t.Fatalf("%s after the cap was raised: %+v (the refusals took from the rate limit)", id, ar)
		}
	}
}

// A token enrols only the ids it names; presenting it for another id spends nothing.
func TestTokenScopedToID(t *testing.T) {
	m := master.TestMaster(t)
	tok := idToken(t, m, "alpha", "app")
	other := startMinion(t, m, "beta", func(c *minion.Config) { c.Token = tok })
	tb.WaitFor(t, 10*time.Second, "beta presented", func() bool { _, ok := m.Keys().Get("beta"); return ok })
	if k, _ := m.Keys().Get("beta"); k.State != pki.StatePending || other.Status() == "connected" {
		t.Fatalf("a token for alpha enrolled beta: %+v", k)
	}
	if n := liveTokens(t, m); n != 1 {
		t.Fatalf("a refused enrolment spent the token (%d left)", n)
	}
	right := startMinion(t, m, "alpha", func(c *minion.Config) { c.Token = tok })
	tb.WaitFor(t, 10*time.Second, "alpha enrolled", func() bool { return right.Status() == "connected" })

	glob := idToken(t, m, "web*", "web")
	if ar := newRaw(t, m, "db1", nil).authAs(glob); ar.Status != wire.StatusPending {
		t.Fatalf("a token for web* enrolled db1: %+v", ar)
	}
	if ar := newRaw(t, m, "web7", nil).authAs(glob); ar.Status != wire.StatusAccepted || strings.Join(ar.Groups, ",") != "web" {
		t.Fatalf("a token for web* did not enrol web7: %+v", ar)
	}
}

// A token never overrides the operator's reject, with the rejected key or another one, and
// spends nothing trying.
func TestTokenDoesNotOverrideReject(t *testing.T) {
	m := master.TestMaster(t)
	bad := newRaw(t, m, "bad", nil)
	bad.authAs("")
	if _, err := m.Client().KeyReject(context.Background(), control.KeyRequest{Glob: "bad"}); err != nil {
		t.Fatal(err)
	}
	tok := idToken(t, m, "bad", "app")
	if ar := bad.authAs(tok); ar.Status != wire.StatusRejected || ar.SessionKey != nil {
		t.Fatalf("a token re-accepted a rejected key: %+v", ar)
	}
	if ar := newRaw(t, m, "bad", nil).authAs(tok); ar.Status != string(pki.StateDenied) || ar.SessionKey != nil {
		t.Fatalf("a token replaced a rejected key: %+v", ar)
	}
	if k, _ := m.Keys().Get("bad"); k.State != pki.StateRejected || !k.Key.Equal(bad.key.Pub) {
		t.Fatalf("rejected record changed: %+v", k)
	}
	if n := liveTokens(t, m); n != 1 {
		t.Fatalf("refused enrolments spent the token (%d left)", n)
	}
}

// Many peers presenting one token at the same moment: exactly one is enrolled.
func TestConcurrentRedemption(t *testing.T) {
	m := master.TestMaster(t)
	tok, _, err := m.Tokens().Create(pki.TokenRequest{Groups: []string{"app"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	const n = 24
	clients := make([]*rawClient, n)
	frames := make([][]byte, n)
	for i := range n {
		clients[i] = newRaw(t, m, "race-"+strconv.Itoa(i), nil)
		frames[i] = clients[i].authFrame(tok, nil)
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() { defer wg.Done(); <-start; clients[i].send(frames[i]) }()
	}
	close(start)
	wg.Wait()
	accepted := 0
	for i := range n {
		ar, ok := clients[i].authReply()
		if !ok {
			t.Fatalf("client %d: no reply", i)
		}
		if ar.Status == wire.StatusAccepted {
			accepted++
		}
	}
	if accepted != 1 || len(m.Keys().Accepted()) != 1 || liveTokens(t, m) != 0 {
		t.Fatalf("%d enrolled with one token (%d accepted keys)", accepted, len(m.Keys().Accepted()))
	}
}

// A minion enrolled with a token pins the master the token names: it never trusts another
// master on first use, and a master_finger that contradicts the token is a config error.
func TestTokenPinsMaster(t *testing.T) {
	m := master.TestMaster(t)
	impostor := master.TestMaster(t)
	tok := idToken(t, m, "pinned")
	mn := startMinion(t, impostor, "pinned", func(c *minion.Config) { c.Token = tok })
	tb.WaitFor(t, 10*time.Second, "the impostor refused", func() bool { return mn.Status() == minion.ErrMasterKeyChanged.Error() })
	if _, ok := impostor.Keys().Get("pinned"); ok {
		t.Fatal("a token-enrolled minion authenticated to another master")
	}
	if _, err := os.Stat(filepath.Join(mn.DataDir(), "master.pub")); err == nil {
		t.Fatal("the minion pinned the impostor")
	}
	cfg := minion.Config{Master: "127.0.0.1", ID: "x", DataDir: t.TempDir(), Token: tok, MasterFinger: impostor.Key().Fingerprint()}
	if err := cfg.Fill(); err == nil || !strings.Contains(err.Error(), "another master") {
		t.Fatalf("contradicting master_finger: %v", err)
	}
	cfg = minion.Config{Master: "127.0.0.1", ID: "x", DataDir: t.TempDir(), Token: "brn2-zz-secret"}
	if err := cfg.Fill(); err == nil {
		t.Fatal("a malformed token was accepted")
	}
	right := startMinion(t, m, "pinned", func(c *minion.Config) { c.Token = tok; c.DataDir = mn.DataDir() })
	tb.WaitFor(t, 10*time.Second, "enrolled with the right master", func() bool { return right.Status() == "connected" })
}

// Local safety: the CLI's client refuses a control socket someone else could have put there,
// and the master refuses to make its socket in a directory others can write.
func TestClientRefusesUntrustedSocket(t *testing.T) {
	m := master.TestMaster(t)
	ctx := context.Background()
	if _, err := m.Client().Finger(ctx); err != nil {
		t.Fatalf("the master's own socket: %v", err)
	}
	dir, err := os.MkdirTemp("", "brs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	link := filepath.Join(dir, "link.sock")
	if err := os.Symlink(m.Config().ControlSocket, link); err != nil {
		t.Fatal(err)
	}
	listen := func(sub string, mode os.FileMode) string {
		d := filepath.Join(dir, sub)
		os.MkdirAll(d, 0o700)
		if err := os.Chmod(d, mode); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(d, "m.sock")
		l, err := net.Listen("unix", p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		return p
	}
	cases := map[string]string{
		"symlink":        link,
		"world-writable": listen("ww", 0o777),
		"group-writable": listen("gw", 0o770),
		"sticky /tmp":    listen("st", 0o1777),
	}
	if os.Getuid() == 0 {
		p := listen("other", 0o700)
		if err := os.Lchown(p, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		cases["owned by nobody"] = p
		d := filepath.Join(dir, "nobodydir")
		q := listen("nobodydir", 0o700)
		os.Lchown(d, 65534, 65534)
		cases["directory owned by nobody"] = q
	} else {
		t.Log("not root: the ownership cases need root and are not run")
	}
	for name, p := range cases {
		_, err := (&control.Client{Path: p}).Finger(ctx)
		if !errors.Is(err, control.ErrUntrustedSocket) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// The master will not make its socket where others can write.
	open := filepath.Join(dir, "open")
	os.Mkdir(open, 0o700)
	os.Chmod(open, 0o777)
	cfg := master.Config{DataDir: filepath.Join(dir, "data"), PublishAddr: "127.0.0.1:0", RequestAddr: "127.0.0.1:0", ControlSocket: filepath.Join(open, "m.sock")}
	mm, err := master.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer mm.Close()
	if err := mm.Start(ctx); err == nil || !strings.Contains(err.Error(), "writable") {
		t.Fatalf("master started with its socket in a world-writable directory: %v", err)
	}
	// A directory it makes itself is 0700.
	cfg.ControlSocket = filepath.Join(dir, "fresh", "sub", "m.sock")
	cfg.DataDir = filepath.Join(dir, "data2")
	m2, err := master.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := m2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	if fi, err := os.Stat(filepath.Dir(cfg.ControlSocket)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("socket directory: %v %v", fi.Mode(), err)
	}
}
