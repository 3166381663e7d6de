package master_test

import (
	"context"
	"testing"
	"time"

	"github.com/brinecm/brine/control"
	"github.com/brinecm/brine/internal/tb"
	"github.com/brinecm/brine/master"
	"github.com/brinecm/brine/minion"
)

// A job published to a minion after its session began, but before its subscriptions reached
// the publish port, did not reach it: it came at the minion's next heartbeat request, which a
// large fleet spaces 20-70 s apart (at a failover, the minions that moved missed the next
// ping). The master now publishes what is pending for the minion again once its subscriptions
// are in. Here they are held until the job is published, and the minion's next heartbeat
// request is an hour away.
func TestJobPublishedBeforeTheSubscriptionArrives(t *testing.T) {
	release := make(chan struct{})
	m := master.TestMaster(t, master.HoldSubscriptions(release))
	mn := minion.TestMinion(t, m.PublishAddr(), m.RequestAddr(), "late", func(c *minion.Config) { c.Heartbeat = "1h" })
	tb.WaitFor(t, 10*time.Second, "a pending key", func() bool { total, _ := m.Keys().Pending(""); return total == 1 })
	m.Keys().Accept("late", nil, false)
	tb.WaitFor(t, 30*time.Second, "connected", func() bool { return mn.Status() == "connected" })

	published := make(chan struct{})
	done := make(chan error, 1)
	var returned bool
	go func() {
		done <- m.Client().Ping(context.Background(), control.PingRequest{Target: "late", Timeout: 15 * time.Second}, func(ev control.Event) {
			switch ev.Event {
			case "published":
				close(published)
			case "return":
				returned = true
			}
		})
	}()
	select {
	case <-published:
	case err := <-done:
		t.Fatalf("the ping ended before it was published: %v", err)
	}
	close(release)
	if err := <-done; err != nil || !returned {
		t.Fatalf("the job published before the subscription arrived never reached the minion: returned %v, %v", returned, err)
	}
}
