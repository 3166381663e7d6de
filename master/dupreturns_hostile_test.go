package master_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/brinecm/brine/internal/jobstore"
	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/master"
)

// A compromised minion sends its return of a job again and again while the operator's command
// reads slowly (its output piped to a pager): each copy is valid, and each used to be handed to
// the job's live watcher, whose buffer holds one return per minion of the job and 16 more. The
// copies filled it, the other minions' returns were dropped, and the job waited out its timeout
// and reported them missing (a rollout then stops, a mesh's second phase never runs). A watcher
// is now handed each minion's return once.
func TestDuplicateReturnsCannotHideOthers(t *testing.T) {
	m := master.TestMaster(t)
	ids := []string{"evil", "m1", "m2", "m3", "m4"}
	clients := map[string]*rawClient{}
	for _, id := range ids {
		clients[id] = evilMinion(t, m, id, nil, nil)
	}
	ret := func(c *rawClient, jid, id string) {
		t.Helper()
		data, _ := json.Marshal(wire.Return{JID: jid, Minion: id, Kind: wire.JobPing, Success: true})
		c.send(c.requestFrame(wire.KindReturn, wire.SignedReturn{Data: data, Sig: c.key.Sign(wire.DomainReturn, data)}))
		if r, ok := c.replyWithin(10 * time.Second); !ok || !r.OK {
			t.Fatalf("%s's return of %s: %+v", id, jid, r)
		}
	}
	published := make(chan string, 1)
	reading := make(chan struct{})
	slowReader := make(chan struct{})
	var once sync.Once
	type outcome struct {
		res *master.Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := m.Run(context.Background(), master.JobSpec{Kind: wire.JobPing, Target: "*", Minions: ids, Timeout: 3 * time.Second},
			func(e master.Event) {
				switch e.Event {
				case "published":
					published <- e.JID
				case "return":
					once.Do(func() {
						close(reading)
						<-slowReader // the operator's pager, not reading yet
					})
				}
			})
		done <- outcome{res, err}
	}()
	jid := <-published
	ret(clients["evil"], jid, "evil")
	<-reading
	for range 3 * (len(ids) + 16) {
		ret(clients["evil"], jid, "evil")
	}
	for _, id := range ids[1:] {
		ret(clients[id], jid, id)
	}
	close(slowReader)
	o := <-done
	if o.err != nil {
		t.Fatal(o.err)
	}
	if len(o.res.Returns) != len(ids) || len(o.res.Missing) != 0 {
		var got []string
		for _, r := range o.res.Returns {
			got = append(got, r.Minion)
		}
		t.Fatalf("returns of %v, missing %v; want all %d: %s", got, o.res.Missing, len(ids), fmt.Sprint(ids))
	}
}

// A return the store already holds, sent again by its minion, reaches a command that waits for it
// when the master that recorded it never told the others (it died before its notification went
// out): the recorded return is handed on, not dropped as a duplicate.
func TestRecordedReturnSentAgainReachesTheCommand(t *testing.T) {
	m := master.TestMaster(t)
	m1, m2 := evilMinion(t, m, "m1", nil, nil), evilMinion(t, m, "m2", nil, nil)
	signed := func(c *rawClient, jid, id string) ([]byte, []byte) {
		data, _ := json.Marshal(wire.Return{JID: jid, Minion: id, Kind: wire.JobPing, Success: true})
		return data, c.key.Sign(wire.DomainReturn, data)
	}
	send := func(c *rawClient, jid, id string) {
		t.Helper()
		data, sig := signed(c, jid, id)
		c.send(c.requestFrame(wire.KindReturn, wire.SignedReturn{Data: data, Sig: sig}))
		if r, ok := c.replyWithin(10 * time.Second); !ok || !r.OK {
			t.Fatalf("%s's return of %s: %+v", id, jid, r)
		}
	}
	published := make(chan string, 1)
	returned := make(chan struct{}, 2)
	done := make(chan *master.Result, 1)
	go func() {
		res, err := m.Run(context.Background(), master.JobSpec{Kind: wire.JobPing, Target: "m*", Minions: []string{"m1", "m2"}, Timeout: 3 * time.Second},
			func(e master.Event) {
				switch e.Event {
				case "published":
					published <- e.JID
				case "return":
					returned <- struct{}{}
				}
			})
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	jid := <-published
	send(m2, jid, "m2")
	<-returned // the command has read what the store held and waits for the rest
	data, sig := signed(m1, jid, "m1")
	if err := m.RecordReturn(jobstore.Return{JID: jid, Minion: "m1", Data: data, Sig: sig, Received: time.Now()}); err != nil {
		t.Fatal(err)
	}
	send(m1, jid, "m1")
	res := <-done
	if res == nil || len(res.Returns) != 2 || len(res.Missing) != 0 {
		t.Fatalf("the command's result: %+v", res)
	}
}
