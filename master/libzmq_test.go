package master_test

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/master"
	"github.com/brinecm/brine/pki"
)

// Issue 10 item 1: a stock ZeroMQ implementation (libzmq 4.3 through Debian's python3-zmq, which
// speaks ZMTP 3.1 and sends its signature before the rest of its greeting) completes the
// handshake with a real master: as DEALER it sends a brine hello and gets a signed challenge, as
// SUB with a session's credential it receives a signed heartbeat (and without one, nothing). CURVE and PLAIN clients are refused during the handshake
// (libzmq reports the failure) instead of hanging. scripts/deps.sh installs python3-zmq.
func TestLibzmqPeers(t *testing.T) {
	if err := exec.Command("/usr/bin/python3", "-c", "import zmq").Run(); err != nil {
		t.Fatalf("python3-zmq is needed (scripts/deps.sh installs it): %v", err)
	}
	m := master.TestMaster(t)
	key := mustKey(t)
	nonce := pki.RandomBytes(32)
	h, _ := json.Marshal(wire.Hello{ID: "pyzmq", Key: key.Pub.String(), Nonce: nonce})
	// The SUB shows the credential of an accepted minion's session, as brine's minions do.
	sess := evilMinion(t, m, "pysub", nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/usr/bin/python3", "testdata/libzmq_peer.py", m.RequestAddr(), m.PublishAddr(),
		hex.EncodeToString(wire.Encode(wire.THello, h)), hex.EncodeToString([]byte(sess.credential())), wire.TopicAll)
	out, err := cmd.CombinedOutput()
	t.Logf("python3-zmq:\n%s", out)
	if err != nil {
		t.Fatalf("libzmq peer: %v", err)
	}
	lines := map[string][]string{}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 0 {
			lines[f[0]+map[bool]string{true: " " + f[1], false: ""}[f[0] == "refused" && len(f) > 1]] = f[1:]
		}
	}

	// The challenge: signed by the master, echoing our nonce.
	ch := lines["challenge"]
	if len(ch) != 1 {
		t.Fatal("no challenge from the master over libzmq")
	}
	frame, _ := hex.DecodeString(ch[0])
	typ, body, err := wire.Decode(frame, wire.MaxReplyFrame)
	if err != nil || typ != wire.TChallenge {
		t.Fatalf("reply is not a challenge: %v %v", typ, err)
	}
	sig, data, err := wire.SplitSigned(body)
	if err != nil || !pki.Verify(m.Key().Sign, wire.DomainChallenge, data, sig) {
		t.Fatal("challenge does not verify against the master key")
	}
	var c wire.Challenge
	if json.Unmarshal(data, &c) != nil || string(c.ClientNonce) != string(nonce) {
		t.Fatal("challenge does not echo the nonce")
	}

	// The heartbeat: topic, then a signed heartbeat envelope.
	p := lines["pub"]
	if len(p) != 2 {
		t.Fatalf("no publication over libzmq: %q", p)
	}
	if topic, _ := hex.DecodeString(p[0]); string(topic) != wire.TopicAll {
		t.Fatalf("topic %q", topic)
	}
	frame, _ = hex.DecodeString(p[1])
	typ, body, err = wire.Decode(frame, wire.MaxJobFrame)
	if err != nil || typ != wire.THeartbeat {
		t.Fatalf("publication is not a heartbeat: %v %v", typ, err)
	}
	sig, data, err = wire.SplitSigned(body)
	if err != nil || !pki.Verify(m.Key().Sign, wire.DomainHeartbeat, data, sig) {
		t.Fatal("heartbeat does not verify against the master key")
	}

	// A libzmq SUB without a credential, subscribed to everything, is sent nothing.
	if s := lines["stranger"]; len(s) != 1 || s[0] != "none" {
		t.Errorf("a libzmq subscriber without a credential: %q, want none", s)
	}

	// Mechanisms brine does not speak: refused in the handshake, seen as such by libzmq.
	for _, mech := range []string{"CURVE", "PLAIN"} {
		r := lines["refused "+mech]
		if len(r) != 2 || !(strings.HasPrefix(r[1], "EVENT_HANDSHAKE_FAILED") || r[1] == "EVENT_DISCONNECTED") {
			t.Errorf("%s client: %q, want a failed handshake", mech, r)
		}
	}
}
