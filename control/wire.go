package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"golang.org/x/sync/semaphore"
)

// The wire format, on a unix socket, one request a connection:
//
//	CLI -> master   {"op":"NAME","body":{...}}      one JSON object; "op" first, body optional
//	master -> CLI   {"kind":"event","event":{...}}  zero or more, the Events of a job op
//	                {"kind":"result","result":{...}} or {"kind":"error","error":"..."}: the last line
//
// The master decodes body into the op's own request type and refuses unknown fields, a body
// larger than the op's MaxRequest, and a request that does not arrive within its read timeout.
// Closing the connection early (Ctrl-C) cancels what the master waits for on its behalf.

// request is the envelope the client writes.
type request struct {
	Op   string `json:"op"`
	Body any    `json:"body"`
}

// Reply kinds.
const (
	kindEvent  = "event"
	kindResult = "result"
	kindError  = "error"
)

// reply is one line the master writes.
type reply struct {
	Kind   string          `json:"kind"`
	Event  *Event          `json:"event,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  string          `json:"error,omitempty"`
}

// ErrTooLarge is wrapped by the error of a request larger than its op takes.
var ErrTooLarge = errors.New("control request too large")

// limitedReader reads at most max bytes, then fails with ErrTooLarge; the server lowers max
// once it knows the op. With a budget, every byte read is first taken from it (in chunks of at
// most budgetChunk, waiting until ctx ends for room) and held until release.
type limitedReader struct {
	r    io.Reader
	read int64 // bytes read so far
	max  int64

	budget *semaphore.Weighted
	ctx    context.Context
}

// budgetChunk is the most one read takes from the budget before it knows how much arrives.
const budgetChunk = 64 << 10

// errBudget is the error of a request that found no room in the server's budget in time.
var errBudget = errors.New("the master is reading or serving other large control requests (their bytes are bounded in all); try again")

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.read >= l.max {
		return 0, ErrTooLarge
	}
	if rest := l.max - l.read; int64(len(p)) > rest {
		p = p[:rest]
	}
	if l.budget == nil {
		n, err := l.r.Read(p)
		l.read += int64(n)
		return n, err
	}
	p = p[:min(len(p), budgetChunk)]
	if err := l.budget.Acquire(l.ctx, int64(len(p))); err != nil {
		return 0, errBudget
	}
	n, err := l.r.Read(p)
	l.budget.Release(int64(len(p) - n))
	l.read += int64(n)
	return n, err
}

// release gives back to the budget what the request took.
func (l *limitedReader) release() {
	if l.budget != nil {
		l.budget.Release(l.read)
		l.read = 0
	}
}

// readEnvelope reads the envelope's opening and its op name from dec.
func readOpName(dec *json.Decoder) (string, error) {
	if t, err := dec.Token(); err != nil {
		return "", err
	} else if t != json.Delim('{') {
		return "", errors.New("a request is a JSON object")
	}
	key, err := dec.Token()
	if err != nil {
		return "", err
	}
	if key != "op" {
		return "", fmt.Errorf(`the request's first field is %v, not "op"`, key)
	}
	v, err := dec.Token()
	if err != nil {
		return "", err
	}
	name, ok := v.(string)
	if !ok {
		return "", errors.New(`"op" is not a string`)
	}
	return name, nil
}

// readBody decodes the rest of the envelope (an optional "body", then the closing brace) into
// body, refusing unknown fields.
func readBody(dec *json.Decoder, body any) error {
	dec.DisallowUnknownFields()
	seen := false
	for {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		if t == json.Delim('}') {
			return nil
		}
		if t != "body" || seen {
			return fmt.Errorf("unknown or repeated request field %v", t)
		}
		seen = true
		if err := dec.Decode(body); err != nil {
			return fmt.Errorf("body: %w", err)
		}
	}
}
