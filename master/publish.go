package master

import (
	"encoding/json"
	"fmt"

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

// publishJobFrames publishes job meta with bundle so that each addressed minion receives one
// copy. full is the frame of the whole job (every minion listed), sent to all when the job
// is not split. It returns the bytes handed to the PUB socket.
func (m *Master) publishJobFrames(meta wire.JobMeta, bundle, full []byte, sk *pki.SessionKey) (int, error) {
	groups := pubGroups(meta.Minions, len(bundle))
	if groups == nil {
		m.publishTo(wire.TopicAll, full)
		return len(full), nil
	}
	total := 0
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
		metaJSON, err := json.Marshal(gm)
		if err != nil {
			return total, err
		}
		frame := wire.JobFrame(sk.ID, sk.Seal(m.key.SignAttached(wire.PackJob(metaJSON, bundle))))
		if len(frame) > wire.MaxJobFrame {
			return total, fmt.Errorf("job of %d bytes is over the %d byte limit", len(frame), wire.MaxJobFrame)
		}
		m.publishTo(g.topic, frame)
		total += len(frame)
	}
	return total, nil
}

// publishTo sends frame on the PUB socket under topic.
func (m *Master) publishTo(topic string, frame []byte) {
	m.pubMu.Lock()
	defer m.pubMu.Unlock()
	_ = m.pub.Send(zmq4.NewMsgFrom([]byte(topic), frame))
}
