package control_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/brinecm/brine/control"
)

type echoReq struct {
	Text  string `json:"text"`
	Steps int    `json:"steps,omitempty"`
}

type echoResp struct {
	Text string `json:"text"`
}

var (
	opEcho  = control.Op[echoReq, echoResp]{Name: "echo"}
	opSmall = control.Op[echoReq, echoResp]{Name: "small", MaxRequest: 1024}
	// opBlock reports on started, blocks until the CLI hangs up and reports that on hungUp.
	opBlock = control.Op[control.None, control.None]{Name: "block"}
	// opHold is opBlock with a request that carries text.
	opHold = control.Op[echoReq, control.None]{Name: "hold"}
)

// serve starts srv on a fresh socket with the test ops and returns a client for it.
func serve(t testing.TB, srv *control.Server) (cl *control.Client, started, hungUp chan struct{}) {
	t.Helper()
	dir, err := os.MkdirTemp("", "brc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "c.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	echo := func(_ context.Context, req echoReq, emit func(control.Event)) (echoResp, error) {
		if req.Text == "fail" {
			return echoResp{}, errors.New("asked to fail")
		}
		for i := range req.Steps {
			emit(control.Event{Event: "step", Batch: i + 1})
		}
		return echoResp{Text: req.Text}, nil
	}
	started, hungUp = make(chan struct{}, 16), make(chan struct{}, 16)
	control.Handle(srv, opEcho, echo)
	control.Handle(srv, opSmall, echo)
	control.Handle(srv, opBlock, func(ctx context.Context, _ control.None, _ func(control.Event)) (control.None, error) {
		started <- struct{}{}
		<-ctx.Done()
		hungUp <- struct{}{}
		return control.None{}, ctx.Err()
	})
	control.Handle(srv, opHold, func(ctx context.Context, _ echoReq, _ func(control.Event)) (control.None, error) {
		started <- struct{}{}
		<-ctx.Done()
		hungUp <- struct{}{}
		return control.None{}, ctx.Err()
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ctx, l) }()
	t.Cleanup(func() { cancel(); <-done })
	return &control.Client{Path: path}, started, hungUp
}

// raw sends data on a new connection and returns the master's reply lines until it hangs up.
func raw(t *testing.T, path, data string) []string {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(data)); err != nil {
		t.Fatal(err)
	}
	c.(*net.UnixConn).CloseWrite()
	var lines []string
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines
}

// The typed call and its handler: events stream before the response; the handler's error
// reaches the caller.
func TestCallRoundTrip(t *testing.T) {
	cl, _, _ := serve(t, &control.Server{})
	var steps []int
	r, err := control.Call(t.Context(), cl, opEcho, echoReq{Text: "hi", Steps: 3}, func(ev control.Event) {
		steps = append(steps, ev.Batch)
	})
	if err != nil || r.Text != "hi" || len(steps) != 3 || steps[2] != 3 {
		t.Fatalf("echo: %+v %v, events %v", r, err, steps)
	}
	if _, err := control.Call(t.Context(), cl, opEcho, echoReq{Text: "fail"}, nil); err == nil || err.Error() != "asked to fail" {
		t.Fatalf("a failing handler: %v", err)
	}
	unknown := control.Op[control.None, control.None]{Name: "nope"}
	if _, err := control.Call(t.Context(), cl, unknown, control.None{}, nil); err == nil || !strings.Contains(err.Error(), `unknown control op "nope"`) {
		t.Fatalf("unknown op: %v", err)
	}
}

// A request is the op's own type: unknown fields, a misplaced op, trailing fields and junk are
// refused with an error naming the problem, and nothing is served.
func TestRequestDecodingIsStrict(t *testing.T) {
	cl, _, _ := serve(t, &control.Server{})
	cases := map[string]string{
		`{"op":"echo","body":{"text":"x","admin":true}}`: `unknown field "admin"`,
		`{"body":{"text":"x"},"op":"echo"}`:              `first field is body, not "op"`,
		`{"op":"echo","body":{"text":"x"},"extra":1}`:    `unknown or repeated request field extra`,
		`{"op":"echo","body":{"text":1}}`:                `cannot unmarshal number`,
		`["op","echo"]`:                                  `a request is a JSON object`,
		`{"op":7}`:                                       `"op" is not a string`,
	}
	for in, want := range cases {
		lines := raw(t, cl.Path, in)
		var r struct{ Kind, Error string }
		if len(lines) != 1 || json.Unmarshal([]byte(lines[0]), &r) != nil || r.Kind != "error" || !strings.Contains(r.Error, want) {
			t.Errorf("%s: %q, want an error with %q", in, lines, want)
		}
	}
	// No body is the zero request.
	lines := raw(t, cl.Path, `{"op":"echo"}`)
	if len(lines) != 1 || lines[0] != `{"kind":"result","result":{"text":""}}` {
		t.Fatalf("no body: %q", lines)
	}
}

// An oversized request is refused with a clear error, before it is read whole, and the server
// goes on serving. The client refuses to send one.
func TestRequestSizeBound(t *testing.T) {
	cl, _, _ := serve(t, &control.Server{})
	big := `{"op":"small","body":{"text":"` + strings.Repeat("a", 4096) + `"}}`
	lines := raw(t, cl.Path, big)
	if len(lines) != 1 || !strings.Contains(lines[0], "control request too large: more than 1024 bytes") {
		t.Fatalf("oversized request: %q", lines)
	}
	// The bound is the op's: the same request is fine for echo.
	if r, err := control.Call(t.Context(), cl, opEcho, echoReq{Text: strings.Repeat("a", 4096)}, nil); err != nil || len(r.Text) != 4096 {
		t.Fatalf("echo after the oversized request: %v", err)
	}
	_, err := control.Call(t.Context(), cl, opSmall, echoReq{Text: strings.Repeat("a", 4096)}, nil)
	if !errors.Is(err, control.ErrTooLarge) || !strings.Contains(err.Error(), "op small takes at most 1024 bytes") {
		t.Fatalf("client-side bound: %v", err)
	}
	// Before the op is known, the request may be 64 KiB (an endless op name).
	c, err := net.Dial("unix", cl.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() {
		c.Write([]byte(`{"op":"`))
		chunk := []byte(strings.Repeat("x", 64<<10))
		for range 3 {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	}()
	line, _ := bufio.NewReader(c).ReadString('\n')
	if !strings.Contains(line, "control request too large: more than 65536 bytes") {
		t.Fatalf("endless op name: %q", line)
	}
}

// The bytes of all requests read or being served are bounded together: while one request holds
// most of the budget, another that does not fit waits and then fails with the reason, and once
// the first is done the same request is served.
func TestRequestBudget(t *testing.T) {
	cl, started, hungUp := serve(t, &control.Server{RequestBudget: 1 << 20, ReadTimeout: 2 * time.Second})
	ctx, hangUp := context.WithCancel(t.Context())
	held := make(chan error, 1)
	go func() {
		_, err := control.Call(ctx, cl, opHold, echoReq{Text: strings.Repeat("h", 900<<10)}, nil)
		held <- err
	}()
	<-started
	lines := raw(t, cl.Path, `{"op":"echo","body":{"text":"`+strings.Repeat("b", 200<<10)+`"}}`)
	if len(lines) != 1 || !strings.Contains(lines[0], "other large control requests") {
		t.Fatalf("a request over the budget left: %.200q", lines)
	}
	hangUp()
	<-hungUp
	<-held
	if r, err := control.Call(t.Context(), cl, opEcho, echoReq{Text: strings.Repeat("b", 200<<10)}, nil); err != nil || len(r.Text) != 200<<10 {
		t.Fatalf("the same request once the budget is free: %v", err)
	}
}

// A connection that sends nothing is closed after the read timeout, with the reason.
func TestReadTimeout(t *testing.T) {
	cl, _, _ := serve(t, &control.Server{ReadTimeout: 100 * time.Millisecond})
	c, err := net.Dial("unix", cl.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	line, _ := bufio.NewReader(c).ReadString('\n')
	if !strings.Contains(line, "the request did not arrive within 100ms") {
		t.Fatalf("idle connection: %q", line)
	}
}

// At the connection bound, idle connections make room for new ones: they cannot lock the
// client out. Connections being served are not closed; a request waits for them instead.
func TestConnectionBound(t *testing.T) {
	cl, started, hungUp := serve(t, &control.Server{MaxConns: 4})
	var idle []net.Conn
	for range 20 {
		c, err := net.Dial("unix", cl.Path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		idle = append(idle, c)
	}
	for i := range 3 {
		if r, err := control.Call(t.Context(), cl, opEcho, echoReq{Text: "through"}, nil); err != nil || r.Text != "through" {
			t.Fatalf("call %d with 20 idle connections: %v", i, err)
		}
	}
	// The oldest idle connections were closed without a word.
	if n, err := idle[0].Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("the oldest idle connection is still open: %d %v", n, err)
	}
	for _, c := range idle {
		c.Close()
	}

	// Four connections being served hold their slots: a fifth request waits for one, and
	// none of the four is closed to make room.
	blocked := make(chan error, 4)
	var hangUp []context.CancelFunc
	for range 4 {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		hangUp = append(hangUp, cancel)
		go func() { _, err := control.Call(ctx, cl, opBlock, control.None{}, nil); blocked <- err }()
	}
	for range 4 {
		<-started
	}
	waited := make(chan error, 1)
	go func() {
		_, err := control.Call(t.Context(), cl, opEcho, echoReq{Text: "late"}, nil)
		waited <- err
	}()
	hangUp[0]() // one CLI hangs up: its handler sees it and its slot frees
	<-hungUp
	if err := <-waited; err != nil {
		t.Fatalf("the waiting request: %v", err)
	}
	for _, cancel := range hangUp[1:] {
		cancel()
	}
	for range 4 {
		// Closed by the server, the call would fail with "closed the control connection early".
		if err := <-blocked; !errors.Is(err, context.Canceled) {
			t.Fatalf("a blocked call: %v", err)
		}
	}
}

// The envelope is what the docs say: op first, a typed body, reply lines with a kind.
func TestWireFormat(t *testing.T) {
	cl, _, _ := serve(t, &control.Server{})
	lines := raw(t, cl.Path, `{"op":"echo","body":{"text":"w","steps":1}}`)
	if len(lines) != 2 {
		t.Fatalf("lines: %q", lines)
	}
	var ev struct {
		Kind  string        `json:"kind"`
		Event control.Event `json:"event"`
	}
	if err := json.Unmarshal([]byte(lines[0]), &ev); err != nil || ev.Kind != "event" || ev.Event.Event != "step" {
		t.Fatalf("event line: %q", lines[0])
	}
	if lines[1] != `{"kind":"result","result":{"text":"w"}}` {
		t.Fatalf("result line: %q", lines[1])
	}
}

// One small op over the socket (connect, request, reply, hang up), and one whose request carries
// 16 MiB (a bundle's worth, base64 in JSON). `go test -run XXX -bench Call ./control`.
func BenchmarkCall(b *testing.B) {
	big := control.Op[struct{ Data []byte }, echoResp]{Name: "big", MaxRequest: control.MaxBundleRequest}
	srv := &control.Server{}
	control.Handle(srv, big, func(_ context.Context, req struct{ Data []byte }, _ func(control.Event)) (echoResp, error) {
		return echoResp{Text: "ok"}, nil
	})
	cl, _, _ := serve(b, srv)
	b.Run("small", func(b *testing.B) {
		for b.Loop() {
			if _, err := control.Call(b.Context(), cl, opEcho, echoReq{Text: "x"}, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("16MiB", func(b *testing.B) {
		data := make([]byte, 16<<20)
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			if _, err := control.Call(b.Context(), cl, big, struct{ Data []byte }{data}, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}
