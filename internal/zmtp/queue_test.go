package zmtp

import (
	"testing"

	"github.com/go-zeromq/zmq4"
)

// A send queue holds at most max messages, those taken and not yet written included, keeps
// their order, and holds no buffer once emptied.
func TestSendQueue(t *testing.T) {
	q := newSendQueue(3)
	for i := range 3 {
		if !q.push(zmq4.NewMsgString(string(rune('a' + i)))) {
			t.Fatalf("push %d refused below the bound", i)
		}
	}
	if q.push(zmq4.NewMsgString("d")) {
		t.Fatal("a fourth message queued over a bound of 3")
	}
	select {
	case <-q.ready:
	default:
		t.Fatal("no ready token after a push")
	}
	got := q.take()
	if len(got) != 3 || string(got[0].Frames[0]) != "a" || string(got[2].Frames[0]) != "c" {
		t.Fatalf("take = %v", got)
	}
	if q.buf != nil {
		t.Fatal("the queue keeps its buffer once taken")
	}
	if q.push(zmq4.NewMsgString("d")) {
		t.Fatal("taken but unwritten messages do not count against the bound")
	}
	q.written()
	if !q.push(zmq4.NewMsgString("d")) {
		t.Fatal("no room after a message was written")
	}
}
