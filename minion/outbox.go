package minion

import (
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/brinecm/brine/internal/atomicfile"
	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/pki"
)

// outbox keeps the minion's signed returns on disk (<data_dir>/outbox, one file per job) until
// the master acknowledges them: a return survives a lost connection, a failover and a restart,
// and is sent again on the next session (DESIGN.md invariant 17).
type outbox struct {
	dir string
	key *pki.KeyPair
	log *slog.Logger
	mu  sync.Mutex // one flush at a time: a return is not sent twice at once
}

// sendFunc sends one request to the master and returns its reply (session.request).
type sendFunc func(kind string, body any) (wire.Reply, error)

// put signs ret and keeps it until the master acknowledges it.
func (o *outbox) put(ret wire.Return) {
	data, _ := json.Marshal(ret)
	sr := wire.SignedReturn{Data: data, Sig: o.key.Sign(wire.DomainReturn, data)}
	raw, _ := json.Marshal(sr)
	if err := atomicfile.Write(filepath.Join(o.dir, ret.JID+".json"), raw, 0o600); err != nil {
		o.log.Error("cannot keep the return on disk", "jid", ret.JID, "err", err)
	}
}

// flush sends every return kept with send; those the master acknowledges or refuses for good are
// removed. It stops at the first that gets no answer (not connected: the next session sends it).
func (o *outbox) flush(send sendFunc) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.send(send)
}

// tryFlush is flush unless one is under way (the session's heartbeat does not wait behind the
// executor's flush; its next tick tries again).
func (o *outbox) tryFlush(send sendFunc) {
	if o.mu.TryLock() {
		defer o.mu.Unlock()
		o.send(send)
	}
}

func (o *outbox) send(send sendFunc) {
	ents, err := os.ReadDir(o.dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if filepath.Ext(e.Name()) != ".json" || e.Name()[0] == '.' {
			continue
		}
		p := filepath.Join(o.dir, e.Name())
		raw, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		var sr wire.SignedReturn
		if json.Unmarshal(raw, &sr) != nil {
			os.Remove(p)
			continue
		}
		_, err = send(wire.KindReturn, sr)
		if err == nil {
			os.Remove(p)
			continue
		}
		var refused *refusedError
		if errors.As(err, &refused) {
			// The master will never take it (unknown job, e.g. its store was wiped).
			o.log.Warn("master refused a return; dropping it", "file", e.Name(), "err", err)
			os.Remove(p)
			continue
		}
		return // not connected or no answer: try again later
	}
}
