package master

import (
	"sync"
	"time"

	"github.com/brinecm/brine/pki"
)

// Limits of the challenge table, the only state an unauthenticated hello creates. A challenge
// lives challengeTTL at most; each source address (IPv4 address or IPv6 /64, as the transport
// counts them) holds at most maxChallengesPerSource, and the table maxChallenges. A new
// challenge over either limit evicts the oldest one of its source, or, when the table is full,
// the oldest one in the table: in O(1), without a scan. A flood from one source therefore
// only evicts its own challenges, and a flood from many sources leaves each challenge at least
// maxChallenges/rate seconds, far more than a minion needs to answer it (one round trip).
//
// A master configured for more connections per source than maxChallengesPerSource (many
// minions behind one NAT address, the swarm benchmark on loopback) holds that many challenges
// per source, up to maxChallenges: each connection has at most one hello outstanding, and a
// minion whose challenge was evicted gets no answer to its auth and waits for its timeout
// (10 s) before it tries again. 5,000 swarm minions connecting at once from 127.0.0.1 made
// 7,735 such timeouts with 256.
const (
	maxChallenges          = 20000
	maxChallengesPerSource = 256
	challengeTTL           = 30 * time.Second
)

type challenge struct {
	id          string
	key         pki.PublicKey
	clientNonce []byte
	expires     time.Time
}

// challengeTable holds outstanding challenges by server nonce, in a list by age for the whole
// table and one per source. It has its own lock: a hello flood never waits on, nor holds, the
// master's.
type challengeTable struct {
	perSource int // challenges per source; 0: maxChallengesPerSource

	mu       sync.Mutex
	byNonce  map[string]*chEntry
	bySource map[string]*chList
	all      chList // oldest first
}

type chEntry struct {
	challenge
	nonce, source    string
	prev, next       *chEntry // in challengeTable.all
	srcPrev, srcNext *chEntry // in the source's list
}

// chList is a doubly linked list of entries through either pair of links.
type chList struct {
	head, tail *chEntry
	n          int
}

func (l *chList) push(e *chEntry, bySrc bool) {
	prev, next := links(e, bySrc)
	*prev, *next = l.tail, nil
	if l.tail != nil {
		_, tn := links(l.tail, bySrc)
		*tn = e
	} else {
		l.head = e
	}
	l.tail = e
	l.n++
}

func (l *chList) remove(e *chEntry, bySrc bool) {
	prev, next := links(e, bySrc)
	if *prev != nil {
		_, pn := links(*prev, bySrc)
		*pn = *next
	} else {
		l.head = *next
	}
	if *next != nil {
		np, _ := links(*next, bySrc)
		*np = *prev
	} else {
		l.tail = *prev
	}
	*prev, *next = nil, nil
	l.n--
}

func links(e *chEntry, bySrc bool) (prev, next **chEntry) {
	if bySrc {
		return &e.srcPrev, &e.srcNext
	}
	return &e.prev, &e.next
}

func (t *challengeTable) drop(e *chEntry) {
	delete(t.byNonce, e.nonce)
	t.all.remove(e, false)
	sl := t.bySource[e.source]
	sl.remove(e, true)
	if sl.n == 0 {
		delete(t.bySource, e.source)
	}
}

// add records challenge c under nonce for source, evicting as described above.
func (t *challengeTable) add(source, nonce string, c challenge, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.byNonce == nil {
		t.byNonce = map[string]*chEntry{}
		t.bySource = map[string]*chList{}
	}
	for t.all.head != nil && now.After(t.all.head.expires) {
		t.drop(t.all.head) // expired: the oldest are first
	}
	sl := t.bySource[source]
	if sl == nil {
		sl = &chList{}
		t.bySource[source] = sl
	}
	if sl.n >= t.sourceLimit() {
		t.drop(sl.head)
	} else if t.all.n >= maxChallenges {
		t.drop(t.all.head)
	}
	if t.bySource[source] == nil { // the drop emptied it
		t.bySource[source] = sl
	}
	e := &chEntry{challenge: c, nonce: nonce, source: source}
	t.byNonce[nonce] = e
	t.all.push(e, false)
	sl.push(e, true)
}

func (t *challengeTable) sourceLimit() int {
	if t.perSource > 0 {
		return t.perSource
	}
	return maxChallengesPerSource
}

// challengesPerSource is the challenge table's per-source bound for a master allowing
// connsPerSource connections per source (0: the transport's default).
func challengesPerSource(connsPerSource int) int {
	return min(max(maxChallengesPerSource, connsPerSource), maxChallenges)
}

// take removes and returns the challenge of nonce; ok is false if there is none or it expired.
func (t *challengeTable) take(nonce string, now time.Time) (challenge, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.byNonce[nonce]
	if e == nil {
		return challenge{}, false
	}
	t.drop(e)
	return e.challenge, !now.After(e.expires)
}

// len returns the number of challenges held.
func (t *challengeTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.all.n
}
