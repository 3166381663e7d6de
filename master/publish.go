package master

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/go-zeromq/zmq4"

	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/pki"
)

// Publishing by topic (internal/wire/topics.go). A job for thousands of minions used to be one
// frame listing them all, sent to every minion, each of which decoded the whole list: O(N^2)
// work for one ping, most of the swarm's time at 5,000 minions. Now each minion receives one
// copy naming at most its bucket's minions, and a job for a few minions reaches only them.
const (
	// perMinionMax: jobs for at most this many minions are published on each minion's topic.
	perMinionMax = 32
	// groupedBundleMax: a bundle larger than this is signed and sealed once and published to
	// all (every copy would be signed, sealed and held in memory once per bucket).
	groupedBundleMax = 1 << 20
)

type pubGroup struct {
	topic   string
	minions []string
}

// pubGroups splits minions into the copies of one job; nil means one copy for everyone.
func pubGroups(minions []string, bundleLen int) []pubGroup {
	if len(minions) <= perMinionMax {
		out := make([]pubGroup, len(minions))
		for i, id := range minions {
			out[i] = pubGroup{topic: wire.TopicMinion(id), minions: []string{id}}
		}
		return out
	}
	if bundleLen > groupedBundleMax {
		return nil
	}
	var by [wire.PubBuckets][]string
	for _, id := range minions {
		b := wire.BucketOf(id)
		by[b] = append(by[b], id)
	}
	var out []pubGroup
	for b, ids := range by {
		if len(ids) > 0 {
			out = append(out, pubGroup{topic: wire.TopicBucket(b), minions: ids})
		}
	}
	return out
}

// sealedJob is one signed copy of a job, sealed once under its own job key.
type sealedJob struct {
	key     *pki.JobKey
	payload []byte // the job key's secretbox of the signed content
}

// jobFrame is one published frame of a job: a topic, the minions whose wraps it carries, and
// which sealed copy it holds.
type jobFrame struct {
	topic   string
	minions []string
	copy    int
}

// sealJobCopies signs and seals meta with bundle once per copy the minion set needs, and says
// which frames carry which copy:
//   - up to perMinionMax minions: one copy, published on each minion's topic with its wrap only;
//   - more, with a small bundle: one copy per bucket naming only the bucket's minions (so that no
//     minion decodes a list of thousands), published on the bucket's topic with its wraps;
//   - more, with a large bundle: one copy for everyone, with every wrap, on TopicAll.
//
// Each copy is sealed exactly once, and every frame carries only the wraps of the minions it is
// for. signed is the whole job signed, for the store (store.Deliveries): the masters that
// deliver it to the minions connected to them, or again after a failover, seal it themselves.
// With one copy it is that copy's signed content; split into buckets, the whole job is signed
// once more (small bundles only: the large one is never split) but sealed never.
func (m *Master) sealJobCopies(meta wire.JobMeta, bundle []byte) (copies []sealedJob, frames []jobFrame, signed []byte, err error) {
	sign := func(mt wire.JobMeta) ([]byte, error) {
		metaJSON, err := json.Marshal(mt)
		if err != nil {
			return nil, err
		}
		return m.key.SignAttached(wire.PackJob(metaJSON, bundle)), nil
	}
	seal := func(signed []byte) sealedJob {
		key := pki.NewJobKey()
		return sealedJob{key: key, payload: key.Seal(signed)}
	}
	if signed, err = sign(meta); err != nil {
		return nil, nil, nil, err
	}
	groups := pubGroups(meta.Minions, len(bundle))
	if groups == nil || len(meta.Minions) <= perMinionMax {
		return []sealedJob{seal(signed)}, oneCopyFrames(meta.Minions, len(bundle)), signed, nil
	}
	copies = make([]sealedJob, 0, len(groups))
	frames = make([]jobFrame, 0, len(groups))
	for _, g := range groups {
		gm := meta
		gm.Minions = g.minions
		gm.Groups = map[string][]string{}
		for _, id := range g.minions {
			gm.Groups[id] = meta.Groups[id]
		}
		if meta.Secrets != nil {
			gm.Secrets = map[string][]byte{}
			for _, id := range g.minions {
				if s, ok := meta.Secrets[id]; ok {
					gm.Secrets[id] = s
				}
			}
		}
		gs, err := sign(gm)
		if err != nil {
			return nil, nil, nil, err
		}
		frames = append(frames, jobFrame{topic: g.topic, minions: g.minions, copy: len(copies)})
		copies = append(copies, seal(gs))
	}
	return copies, frames, signed, nil
}

// oneCopyFrames are the frames of one copy of a job (of bundleLen bytes of bundle) for
// minions: on each one's topic, by bucket, or to all, as sealJobCopies would choose.
func oneCopyFrames(minions []string, bundleLen int) []jobFrame {
	groups := pubGroups(minions, bundleLen)
	if groups == nil {
		return []jobFrame{{topic: wire.TopicAll, minions: minions}}
	}
	frames := make([]jobFrame, len(groups))
	for i, g := range groups {
		frames[i] = jobFrame{topic: g.topic, minions: g.minions}
	}
	return frames
}

// checkFrame refuses a job frame of n wraps and a sealed payload of p bytes over
// wire.MaxJobFrame.
func checkFrame(n, p int) error {
	if l := wire.JobFrameLen(n, p); l > wire.MaxJobFrame {
		return fmt.Errorf("job of %d bytes is over the %d byte limit; nothing was sent", l, wire.MaxJobFrame)
	}
	return nil
}

// publishJobFrames publishes each frame with the job key of its copy wrapped under the current
// session key of each of its minions that has a session. A minion without one (it is
// reconnecting) gets the job from KindResend once it has a new session. It returns the bytes
// handed to the PUB socket.
func (m *Master) publishJobFrames(copies []sealedJob, frames []jobFrame, minions []string) int {
	keys := m.sessionKeys(minions)
	total := 0
	for _, f := range frames {
		sj := copies[f.copy]
		nonce := pki.RandomNonce()
		wraps := make([]wire.Wrap, 0, len(f.minions))
		for _, id := range f.minions {
			if sk, ok := keys[id]; ok {
				wraps = append(wraps, wire.Wrap{KeyID: sk.ID, Key: sk.Wrap(nonce, sj.key)})
			}
		}
		if len(wraps) == 0 {
			continue
		}
		frame := wire.JobFrame(nonce, wraps, sj.payload)
		m.publishTo(f.topic, frame)
		total += len(frame)
	}
	return total
}

// publishTo sends frame on the PUB socket under topic.
func (m *Master) publishTo(topic string, frame []byte) {
	m.pubMu.Lock()
	defer m.pubMu.Unlock()
	_ = m.pub.Send(zmq4.NewMsgFrom([]byte(topic), frame))
	for _, tap := range m.taps {
		select {
		case tap <- [][]byte{[]byte(topic), frame}:
		default:
		}
	}
}

// admitSubscriber admits a subscriber of the publish port that shows the credential of a
// session held here (wire.SubCredential): it may subscribe to that session's minion's topics
// and to nothing else, and is the only subscriber that session ever has. Nobody else is sent
// anything: neither the heartbeats nor which minions get jobs and when, and a stranger cannot
// make the master write every job once more per connection it opens.
func (m *Master) admitSubscriber(topic []byte) (holder string, topics []string, ok bool) {
	sid, keyID, sealed, ok := wire.SplitSubCredential(topic)
	if !ok {
		return "", nil, false
	}
	if m.cfg.admitGate != nil {
		select {
		case <-m.cfg.admitGate:
		case <-m.ctx.Done():
			return "", nil, false
		}
	}
	h := hex.EncodeToString(sid)
	m.mu.Lock()
	s, ok := m.sessions[h]
	var k *pki.SessionKey
	var minion string
	if ok && !s.subscribed {
		k, minion = s.keyFor(keyID), s.minion
	}
	m.mu.Unlock()
	if k == nil {
		return "", nil, false
	}
	if got, ok := k.OpenTagged(wire.DomainSubscribe, sealed); !ok || !bytes.Equal(got, sid) {
		return "", nil, false
	}
	// Single use: the credential crossed the network in clear, and the minion subscribes once
	// per session (it authenticates again when its subscription is lost).
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, ok := m.sessions[h]
	if !ok || cur.subscribed {
		return "", nil, false
	}
	cur.subscribed = true
	return h, wire.MinionTopics(minion), true
}

// sessionLive says whether session sid (hex) is still held: a subscriber admitted under it is
// kept (zmtp.Admission.Live).
func (m *Master) sessionLive(sid string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.sessions[sid]
	return ok
}

// evictSubscriber disconnects the subscriber admitted under session sid (hex), which ended.
func (m *Master) evictSubscriber(sid string) {
	if sid != "" && m.pub != nil {
		m.pub.Evict(sid)
	}
}

// subscriberReady is told by the publish port that session sid's subscriber has subscribed to
// all its topics. A job published to the minion before then may not have reached it: published
// while it moved here from a master that went, or resent at its first heartbeat's asking. If
// that first heartbeat has been served, the jobs still pending for the minion are published
// again now, on its own topic; if not, that heartbeat lists them (serve).
func (m *Master) subscriberReady(sid string) {
	m.mu.Lock()
	cur, ok := m.sessions[sid]
	var s session
	if ok {
		s = *cur
	}
	m.mu.Unlock()
	if !ok || !s.asked || m.ctx.Err() != nil {
		return
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		pending, err := m.deliver.Pending(s.minion, time.Now(), 0)
		if err != nil {
			m.fleet.storeLog.error(m.log, "pending", "could not read the jobs pending for a minion", "minion", s.minion, "err", err)
			return
		}
		m.resend(s, pending[:min(len(pending), maxResend)], 0)
	}()
}

// resend publishes again, on s's minion's own topic, the jobs of jids addressed to it and not
// returned by it, each at most once per every (with several masters, the store says which one
// resends it). The payload was sealed once; only the job key is wrapped again, for the key the
// minion holds now. The copy is this master's, or sealed once here from the signed job in the
// store (published by another master, or before a restart).
func (m *Master) resend(s session, jids []string, every time.Duration) {
	for _, jid := range jids {
		signed, err := m.deliver.Resendable(jid, s.minion, time.Now(), every)
		if err != nil {
			m.fleet.storeLog.error(m.log, "resend-read", "could not read a job to publish again", "jid", jid, "minion", s.minion, "err", err)
		}
		if signed == nil {
			continue
		}
		sj, err := m.copies.forMinion(jid, s.minion, signed, m.copiesOfSigned)
		if err != nil {
			m.fleet.storeLog.error(m.log, "resend-seal", "could not seal a job to publish again", "jid", jid, "minion", s.minion, "err", err)
			continue
		}
		// A minion asks for its jobs again at every heartbeat and new subscription, each job
		// once a heartbeat: one line per minion a minute, whatever its jobs and reconnections.
		m.resendLog.info(m.log, s.minion, "publishing a job again for a minion that missed it", "jid", jid, "minion", s.minion)
		nonce := pki.RandomNonce()
		wraps := []wire.Wrap{{KeyID: s.sk.ID, Key: s.sk.Wrap(nonce, sj.key)}}
		m.publishTo(wire.TopicMinion(s.minion), wire.JobFrame(nonce, wraps, sj.payload))
	}
}
