package minion

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/brinecm/brine/internal/recordlog"
	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/pki"
)

// The outbox: <data_dir>/outbox.log, a record per signed return (synced before it is sent) and
// a record per acknowledgement (not synced: one lost is a return sent again, which the master
// records once per job and minion). The directory <data_dir>/outbox, one file per return, is
// how minions before the log kept them; its returns are moved into the log at start.
const (
	outboxLog    = "outbox.log"
	outboxLegacy = "outbox"
)

// Compaction of the outbox log: emptied once every return in it is acknowledged and it has
// grown past outboxTruncateAt; rewritten with the returns still unsent once it has grown past
// outboxRewriteAt and those are less than half of it. (Variables for tests.)
var (
	outboxTruncateAt int64 = 64 << 10
	outboxRewriteAt  int64 = 4 << 20
)

// outbox keeps the minion's signed returns on disk until the master acknowledges them: a return
// survives a lost connection, a failover and a restart, and is sent again on the next session
// (DESIGN.md invariant 17).
type outbox struct {
	key *pki.KeyPair
	log *slog.Logger
	mu  sync.Mutex // one flush at a time: a return is not sent twice at once

	fmu     sync.Mutex // guards the fields below
	file    *recordlog.Log
	pending map[string]slot // jid -> its return's record in file, until acknowledged
	order   []string        // the jids in pending, in the order kept (and some acknowledged)
	live    int64           // bytes of the records in pending
}

// slot is where a record's payload is in the log.
type slot struct {
	off int64
	n   int
}

// outboxRecord is one line of the outbox log: a return kept (Ret) or acknowledged (Ack).
type outboxRecord struct {
	JID string             `json:"jid"`
	Ret *wire.SignedReturn `json:"ret,omitempty"`
	Ack bool               `json:"ack,omitempty"`
}

// sendFunc sends one request to the master and returns its reply (session.request).
type sendFunc func(kind string, body any) (wire.Reply, error)

// openOutbox opens the outbox of the data dir dir and moves into it the returns of the old
// layout. A torn last record is dropped (an acknowledgement: its return is sent again; a return:
// its put had not returned, so it was never sent and the master reports it missing). A record
// that cannot be read with good ones after it is dropped with a warning, as a return file that
// could not be read was: the minion starts (a lost return is a job reported missing, not a
// job run twice).
func openOutbox(dir string, key *pki.KeyPair, log *slog.Logger) (*outbox, error) {
	path := filepath.Join(dir, outboxLog)
	file, recs, st, err := recordlog.Open(path)
	if err != nil {
		return nil, err
	}
	o := &outbox{key: key, log: log, file: file, pending: map[string]slot{}}
	rewrite := st.Bad > 0
	if st.Bad > 0 {
		log.Warn("outbox records that cannot be read are dropped", "file", path, "records", st.Bad)
	}
	for _, r := range recs {
		var rec outboxRecord
		if json.Unmarshal(r.Payload, &rec) != nil || rec.JID == "" || (rec.Ret == nil) == !rec.Ack {
			log.Warn("an outbox record that cannot be read is dropped", "file", path, "offset", r.Off)
			rewrite = true
			continue
		}
		if rec.Ack {
			o.forget(rec.JID)
		} else {
			o.keep(rec.JID, slot{r.Off, len(r.Payload)})
		}
	}

	// The old layout: each return in a file of its own, moved into the log before it goes.
	old := filepath.Join(dir, outboxLegacy)
	ents, err := os.ReadDir(old)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		file.Close()
		return nil, fmt.Errorf("outbox %s: %w", old, err)
	}
	haveOld := err == nil
	var moved []string
	var extra [][]byte
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			moved = append(moved, name) // a writer's temporary file, left by a crash
			continue
		}
		jid, ok := strings.CutSuffix(name, ".json")
		if !ok {
			continue
		}
		moved = append(moved, name)
		raw, err := os.ReadFile(filepath.Join(old, name))
		if err != nil {
			file.Close()
			return nil, fmt.Errorf("outbox %s: %w", old, err)
		}
		var sr wire.SignedReturn
		if json.Unmarshal(raw, &sr) != nil {
			log.Warn("an outbox file that cannot be read is dropped", "file", name)
			continue
		}
		if _, ok := o.pending[jid]; ok {
			continue // moved before a crash that left the file
		}
		rec, _ := json.Marshal(outboxRecord{JID: jid, Ret: &sr})
		extra = append(extra, rec)
		o.keep(jid, slot{})
	}
	if rewrite || len(extra) > 0 {
		if err := o.rewrite(extra); err != nil {
			file.Close()
			return nil, fmt.Errorf("outbox %s: %w", path, err)
		}
	}
	for _, name := range moved {
		os.Remove(filepath.Join(old, name))
	}
	if haveOld {
		os.Remove(old) // only when empty: anything else in it stays
	}
	return o, nil
}

// keep and forget update pending; the caller holds fmu (or owns o).
func (o *outbox) keep(jid string, s slot) {
	if old, ok := o.pending[jid]; ok {
		o.live -= int64(old.n)
	} else {
		o.order = append(o.order, jid)
	}
	o.pending[jid] = s
	o.live += int64(s.n)
}

func (o *outbox) forget(jid string) {
	if s, ok := o.pending[jid]; ok {
		delete(o.pending, jid)
		o.live -= int64(s.n)
	}
}

// rewrite replaces the log with the returns pending (in order) followed by extra, the records
// of returns pending whose slot is not yet known; the caller holds fmu (or owns o).
func (o *outbox) rewrite(extra [][]byte) error {
	var jids []string
	var recs [][]byte
	for _, jid := range o.order {
		s, ok := o.pending[jid]
		if !ok || s.n == 0 {
			continue
		}
		rec, err := o.file.ReadAt(s.off, s.n)
		if err != nil {
			return err
		}
		jids = append(jids, jid)
		recs = append(recs, rec)
	}
	for _, rec := range extra {
		var r outboxRecord
		_ = json.Unmarshal(rec, &r)
		jids = append(jids, r.JID)
		recs = append(recs, rec)
	}
	offs, err := o.file.Rewrite(recs)
	if err != nil {
		return err
	}
	o.pending, o.order, o.live = map[string]slot{}, nil, 0
	for i, jid := range jids {
		o.keep(jid, slot{offs[i], len(recs[i])})
	}
	return nil
}

// put signs ret and keeps it until the master acknowledges it. The return is on disk when put
// returns.
func (o *outbox) put(ret wire.Return) {
	data, _ := json.Marshal(ret)
	sr := wire.SignedReturn{Data: data, Sig: o.key.Sign(wire.DomainReturn, data)}
	rec, _ := json.Marshal(outboxRecord{JID: ret.JID, Ret: &sr})
	o.fmu.Lock()
	defer o.fmu.Unlock()
	off, err := o.file.Append(rec, true)
	if err != nil {
		// A log a failed append left broken is mended by a rewrite with this return in it.
		err = o.rewrite([][]byte{rec})
		if err != nil {
			o.log.Error("cannot keep the return on disk", "jid", ret.JID, "err", err)
		}
		return
	}
	o.keep(ret.JID, slot{off, len(rec)})
}

// ack records that the master has jid's return (or refused it for good), without a sync, and
// compacts the log when it has grown.
func (o *outbox) ack(jid string) {
	o.fmu.Lock()
	defer o.fmu.Unlock()
	if _, ok := o.pending[jid]; !ok {
		return
	}
	o.forget(jid)
	rec, _ := json.Marshal(outboxRecord{JID: jid, Ack: true})
	if _, err := o.file.Append(rec, false); err != nil {
		o.log.Warn("cannot record an acknowledged return (it will be sent again)", "jid", jid, "err", err)
	}
	var err error
	switch size := o.file.Size(); {
	case len(o.pending) == 0 && size >= outboxTruncateAt:
		if err = o.file.Truncate(); err == nil {
			o.order = nil
		}
	case size >= outboxRewriteAt && 2*o.live < size:
		err = o.rewrite(nil)
	}
	if err != nil {
		o.log.Warn("cannot compact the outbox", "err", err)
	}
}

// next returns the first return kept after position i of order, and its position.
func (o *outbox) next(i int) (string, *wire.SignedReturn, int) {
	o.fmu.Lock()
	defer o.fmu.Unlock()
	for ; i < len(o.order); i++ {
		jid := o.order[i]
		s, ok := o.pending[jid]
		if !ok {
			continue
		}
		raw, err := o.file.ReadAt(s.off, s.n)
		var rec outboxRecord
		if err == nil {
			err = json.Unmarshal(raw, &rec)
		}
		if err != nil || rec.Ret == nil {
			o.log.Warn("cannot read a kept return", "jid", jid, "err", err)
			continue
		}
		return jid, rec.Ret, i
	}
	return "", nil, i
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
	// put only appends to order; a compaction in ack renumbers it, and what this send then
	// skips the next one sends (each return kept is followed by a flush, each heartbeat tries).
	for i := 0; ; i++ {
		jid, sr, at := o.next(i)
		if sr == nil {
			return
		}
		i = at
		_, err := send(wire.KindReturn, *sr)
		if err == nil {
			o.ack(jid)
			continue
		}
		var refused *refusedError
		if errors.As(err, &refused) {
			// The master will never take it (unknown job, e.g. its store was wiped).
			o.log.Warn("master refused a return; dropping it", "jid", jid, "err", err)
			o.ack(jid)
			continue
		}
		return // not connected or no answer: try again later
	}
}

// UnsentReturns lists the jobs whose returns the minion with data dir dir keeps and the master
// has not acknowledged, in the order kept. It reads the outbox without changing it, also while
// the minion runs.
func UnsentReturns(dir string) ([]string, error) {
	recs, _, err := recordlog.Read(filepath.Join(dir, outboxLog))
	if err != nil {
		return nil, err
	}
	var jids []string
	kept := map[string]bool{}
	for _, r := range recs {
		var rec outboxRecord
		if json.Unmarshal(r.Payload, &rec) != nil {
			continue
		}
		if rec.Ack {
			kept[rec.JID] = false
		} else if rec.Ret != nil {
			if _, ok := kept[rec.JID]; !ok {
				jids = append(jids, rec.JID)
			}
			kept[rec.JID] = true
		}
	}
	out := jids[:0]
	for _, jid := range jids {
		if kept[jid] {
			out = append(out, jid)
		}
	}
	return out, nil
}
