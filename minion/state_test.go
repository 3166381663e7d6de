package minion

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/brinecm/brine/internal/recordlog"
	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/pki"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func testKey(t testing.TB) *pki.KeyPair {
	k, err := pki.GenerateKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func appendRaw(t *testing.T, path string, data []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
}

func mustOpenSeen(t *testing.T, dir string) *seenJobs {
	t.Helper()
	s, err := openSeen(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.log.Close() })
	return s
}

func mustOpenOutbox(t *testing.T, dir string, key *pki.KeyPair) *outbox {
	t.Helper()
	o, err := openOutbox(dir, key, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.file.Close() })
	return o
}

// A crash during an append leaves a torn last record: cut short, or (ext4 without a journal)
// zeros where the record was to be. It is dropped at start, and the log goes on after the last
// good record.
func TestSeenLogTornTail(t *testing.T) {
	for name, tail := range map[string][]byte{
		"cut short":    []byte(`1a2b3c4d {"jid":"j3","exp":"20`),
		"zeros":        make([]byte, 700),
		"bad checksum": []byte(`00000000 {"jid":"j3","exp":"2030-01-01T00:00:00Z"}` + "\n"),
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			now := time.Now()
			s := mustOpenSeen(t, dir)
			s.add("j1", now.Add(time.Hour), now)
			s.add("j2", now.Add(time.Hour), now)
			appendRaw(t, filepath.Join(dir, seenLog), tail)

			s2 := mustOpenSeen(t, dir)
			if !s2.has("j1") || !s2.has("j2") || s2.has("j3") {
				t.Fatalf("after a torn tail: %v", s2.jobs)
			}
			if !s2.add("j4", now.Add(time.Hour), now) {
				t.Fatal("no add after a torn tail")
			}
			s3 := mustOpenSeen(t, dir)
			if len(s3.jobs) != 3 || !s3.has("j4") {
				t.Fatalf("after the torn tail was cut and j4 added: %v", s3.jobs)
			}
			if _, st, _ := recordlog.Read(filepath.Join(dir, seenLog)); st != (recordlog.Stats{}) {
				t.Fatalf("the log still holds the torn tail: %+v", st)
			}
		})
	}
}

// A record that does not check with good ones after it was not torn by a crash: the minion
// refuses to start rather than forget a job (a replay would run it again). So does a corrupt
// seen.json of the old layout.
func TestSeenLogCorruptRecordRefused(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	s := mustOpenSeen(t, dir)
	s.add("j1", now.Add(time.Hour), now)
	s.add("j2", now.Add(time.Hour), now)
	p := filepath.Join(dir, seenLog)
	data, _ := os.ReadFile(p)
	data[12] ^= 1 // in the first record
	os.WriteFile(p, data, 0o600)
	if _, err := openSeen(dir); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("a corrupt record accepted: %v", err)
	}

	dir = t.TempDir()
	os.WriteFile(filepath.Join(dir, seenLegacy), []byte(`{"j1":`), 0o600)
	if _, err := openSeen(dir); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("a corrupt seen.json accepted: %v", err)
	}
}

// A minion upgraded from the one-JSON-file record keeps every job it had seen.
func TestSeenMigratesFromJSON(t *testing.T) {
	dir := t.TempDir()
	now := time.Now().Round(0)
	old := map[string]time.Time{"a": now.Add(time.Hour), "b": now.Add(2 * time.Hour)}
	data, _ := json.Marshal(old)
	os.WriteFile(filepath.Join(dir, seenLegacy), data, 0o600)

	s := mustOpenSeen(t, dir)
	if s.add("a", now.Add(time.Hour), now) || s.add("b", now.Add(time.Hour), now) {
		t.Fatal("a job of the old record accepted again")
	}
	if _, err := os.Stat(filepath.Join(dir, seenLegacy)); !os.IsNotExist(err) {
		t.Fatalf("seen.json left after the move: %v", err)
	}
	s.add("c", now.Add(time.Hour), now)
	s2 := mustOpenSeen(t, dir)
	for jid, exp := range old {
		if !s2.jobs[jid].Equal(exp) {
			t.Fatalf("%s after restart: %v, want %v", jid, s2.jobs[jid], exp)
		}
	}
	if !s2.has("c") {
		t.Fatal("a job added after the move lost")
	}
}

// Records of expired jobs are dropped by a rewrite once they outnumber the jobs kept: the log
// stays bounded, and holds the same jobs after a restart.
func TestSeenLogCompaction(t *testing.T) {
	old := seenCompactMin
	seenCompactMin = 50
	t.Cleanup(func() { seenCompactMin = old })
	dir := t.TempDir()
	s := mustOpenSeen(t, dir)
	now := time.Now().Round(0) // as read back: no monotonic reading
	for i := range 1000 {
		now = now.Add(time.Second)
		exp := now.Add(10 * time.Second) // ten kept at any time
		if !s.add(fmt.Sprintf("j%d", i), exp, now) {
			t.Fatalf("add %d failed", i)
		}
		recs, _, err := recordlog.Read(filepath.Join(dir, seenLog))
		if err != nil {
			t.Fatal(err)
		}
		if bound := 2*len(s.jobs) + seenCompactMin; len(recs) > bound {
			t.Fatalf("after %d adds the log holds %d records for %d jobs", i+1, len(recs), len(s.jobs))
		}
	}
	s2 := mustOpenSeen(t, dir)
	now = now.Add(time.Second)
	s2.add("next", now.Add(time.Hour), now) // drops the expired, as s did
	delete(s2.jobs, "next")
	s.add("next2", now.Add(time.Hour), now)
	delete(s.jobs, "next2")
	if fmt.Sprint(s.jobs) != fmt.Sprint(s2.jobs) {
		t.Fatalf("after restart %v, want %v", s2.jobs, s.jobs)
	}
}

// sent collects what an outbox sends, acknowledging all of it.
type sent struct{ jids []string }

func (s *sent) send(kind string, body any) (wire.Reply, error) {
	var r wire.Return
	json.Unmarshal(body.(wire.SignedReturn).Data, &r)
	s.jids = append(s.jids, r.JID)
	return wire.Reply{}, nil
}

func unsent(t *testing.T, dir string) string {
	t.Helper()
	jids, err := UnsentReturns(dir)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(jids, ",")
}

// The outbox keeps returns across restarts until they are acknowledged; a torn last record is
// dropped, and a record that cannot be read in the middle is dropped with a warning (the
// minion starts: the worst is a return reported missing, never a job run twice).
func TestOutboxLogRestartTornAndCorrupt(t *testing.T) {
	dir := t.TempDir()
	key := testKey(t)
	o := mustOpenOutbox(t, dir, key)
	for _, jid := range []string{"r1", "r2", "r3"} {
		o.put(wire.Return{JID: jid, Minion: "m"})
	}
	o.ack("r1")
	if got := unsent(t, dir); got != "r2,r3" {
		t.Fatalf("unsent %s", got)
	}
	p := filepath.Join(dir, outboxLog)
	appendRaw(t, p, []byte(`0badf00d {"jid":"r2","ac`))

	o2 := mustOpenOutbox(t, dir, key)
	var s sent
	o2.flush(s.send)
	if strings.Join(s.jids, ",") != "r2,r3" || unsent(t, dir) != "" {
		t.Fatalf("after a torn tail sent %v, unsent %q", s.jids, unsent(t, dir))
	}

	// r4 then r5 kept; r4's record corrupted in the middle of the log.
	o2.put(wire.Return{JID: "r4"})
	o2.put(wire.Return{JID: "r5"})
	data, _ := os.ReadFile(p)
	i := bytes.Index(data, []byte(`"r4"`))
	data[i+1] = 'x'
	os.WriteFile(p, data, 0o600)
	o3 := mustOpenOutbox(t, dir, key)
	s = sent{}
	o3.flush(s.send)
	if strings.Join(s.jids, ",") != "r5" {
		t.Fatalf("after a corrupt record sent %v", s.jids)
	}
	if _, st, _ := recordlog.Read(p); st.Bad != 0 || st.Torn != 0 {
		t.Fatalf("the corrupt record kept: %+v", st)
	}
}

// A minion upgraded from the one-file-per-return outbox sends every return it kept.
func TestOutboxMigratesFromFiles(t *testing.T) {
	dir := t.TempDir()
	key := testKey(t)
	old := filepath.Join(dir, outboxLegacy)
	os.Mkdir(old, 0o700)
	for _, jid := range []string{"o1", "o2"} {
		data, _ := json.Marshal(wire.Return{JID: jid})
		raw, _ := json.Marshal(wire.SignedReturn{Data: data, Sig: key.Sign(wire.DomainReturn, data)})
		os.WriteFile(filepath.Join(old, jid+".json"), raw, 0o600)
	}
	os.WriteFile(filepath.Join(old, ".o3.json.brine-123"), []byte("{"), 0o600) // a dead writer's
	os.WriteFile(filepath.Join(old, "o4.json"), []byte("{"), 0o600)            // unreadable, as before

	o := mustOpenOutbox(t, dir, key)
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Fatalf("the old outbox left: %v", err)
	}
	if got := unsent(t, dir); got != "o1,o2" {
		t.Fatalf("unsent after the move: %s", got)
	}
	// Restarted before sending: still there.
	o.file.Close()
	o = mustOpenOutbox(t, dir, key)
	var s sent
	o.flush(s.send)
	if strings.Join(s.jids, ",") != "o1,o2" || unsent(t, dir) != "" {
		t.Fatalf("sent %v, unsent %q", s.jids, unsent(t, dir))
	}
}

// The outbox log is emptied once every return in it is acknowledged and it has grown, and
// rewritten with the returns still unsent once it is large and mostly acknowledged.
func TestOutboxLogCompaction(t *testing.T) {
	oldT, oldR := outboxTruncateAt, outboxRewriteAt
	outboxTruncateAt, outboxRewriteAt = 2<<10, 8<<10
	t.Cleanup(func() { outboxTruncateAt, outboxRewriteAt = oldT, oldR })
	dir := t.TempDir()
	key := testKey(t)
	o := mustOpenOutbox(t, dir, key)
	for i := range 100 {
		o.put(wire.Return{JID: fmt.Sprintf("t%d", i)})
		o.flush((&sent{}).send)
		if o.file.Size() > outboxTruncateAt+1024 {
			t.Fatalf("after %d returns sent the log is %d bytes", i+1, o.file.Size())
		}
	}
	// One return never acknowledged (the master does not answer) while others come and go.
	o.put(wire.Return{JID: "stuck"})
	var s sent
	for i := range 200 {
		jid := fmt.Sprintf("u%d", i)
		o.put(wire.Return{JID: jid})
		o.ack(jid)
		if o.file.Size() > 2*outboxRewriteAt {
			t.Fatalf("after %d returns the log is %d bytes", i+1, o.file.Size())
		}
	}
	if got := unsent(t, dir); got != "stuck" {
		t.Fatalf("unsent %s", got)
	}
	o2 := mustOpenOutbox(t, dir, key)
	o2.flush(s.send)
	if strings.Join(s.jids, ",") != "stuck" {
		t.Fatalf("sent after restart %v", s.jids)
	}
}

// The seen record and the outbox of a minion killed (SIGKILL) again and again while it keeps
// jobs and returns: every job it was told was recorded is still seen, every return it kept and
// did not see acknowledged is still unsent, and it starts every time.
func TestStateSurvivesKill9(t *testing.T) {
	if dir := os.Getenv("BRINE_TEST_STATE_CHILD"); dir != "" {
		stateChild(dir)
		return
	}
	dir := t.TempDir()
	acked := map[string]bool{} // jid -> its ack was recorded before it was reported
	next := 0
	for round := range 8 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestStateSurvivesKill9$", "-test.count=1")
		cmd.Env = append(os.Environ(), "BRINE_TEST_STATE_CHILD="+dir, "BRINE_TEST_STATE_FROM="+strconv.Itoa(next))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := bufio.NewScanner(out)
		want := 30 + 37*round%100 // reports to read before the kill
		n := 0
		for lines.Scan() { // up to the kill, and what the child wrote before it died
			f := strings.Fields(lines.Text())
			if len(f) != 2 {
				continue
			}
			acked[f[0]] = f[1] == "acked"
			next, _ = strconv.Atoi(f[0][1:])
			if n++; n == want {
				cmd.Process.Signal(syscall.SIGKILL)
			}
		}
		cmd.Wait()
		if n < want {
			t.Fatalf("round %d: the child reported %d jobs, not %d", round, n, want)
		}
		next += 2 // past the job the child may have recorded and not reported

		s, err := openSeen(dir)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		for jid := range acked {
			if n, _ := strconv.Atoi(jid[1:]); n%3 == 0 && !s.has(jid) {
				t.Fatalf("round %d: %s, recorded before the kill, is not seen", round, jid)
			}
		}
		s.log.Close()
		kept, err := UnsentReturns(dir)
		if err != nil {
			t.Fatal(err)
		}
		unsentNow := map[string]bool{}
		for _, jid := range kept {
			unsentNow[jid] = true
		}
		for jid, a := range acked {
			if !a && !unsentNow[jid] {
				t.Fatalf("round %d: the return of %s, kept before the kill, is lost", round, jid)
			}
			if a && unsentNow[jid] {
				t.Fatalf("round %d: the return of %s, acknowledged before the kill, is unsent again", round, jid)
			}
		}
	}
}

// stateChild records jobs and returns in dir until it is killed, reporting each on stdout once
// it is recorded: "jid kept" (seen, return kept) or "jid acked" (and acknowledged). One job in
// three stays in the seen record (expires in an hour), the others expire at once, so the seen
// log is compacted; small outbox bounds make the outbox log compact too.
func stateChild(dir string) {
	seenCompactMin = 20
	outboxTruncateAt, outboxRewriteAt = 1<<10, 4<<10
	from, _ := strconv.Atoi(os.Getenv("BRINE_TEST_STATE_FROM"))
	s, err := openSeen(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	key, _ := pki.GenerateKeyPair()
	o, err := openOutbox(dir, key, quietLog())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	for i := from; ; i++ {
		jid := fmt.Sprintf("j%d", i)
		now := time.Now()
		exp := now
		if i%3 == 0 {
			exp = now.Add(time.Hour)
		}
		if !s.add(jid, exp, now) {
			fmt.Fprintln(os.Stderr, "add failed", jid)
			os.Exit(3)
		}
		o.put(wire.Return{JID: jid})
		state := "kept"
		if i%2 == 0 {
			o.ack(jid)
			state = "acked"
		}
		fmt.Printf("%s %s\n", jid, state)
	}
}
