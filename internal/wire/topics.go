package wire

import "hash/fnv"

// Published messages are two ZeroMQ frames, a topic and the envelope, so that the PUB socket
// sends each minion only what concerns it (ZeroMQ matches subscriptions against the topic as
// a prefix). Every minion subscribes to three topics: TopicAll (heartbeats, and jobs whose
// bundle is too large to sign once per group), its bucket's, and its own. A job for many
// minions is published once per bucket, each copy signed with only that bucket's minions in it,
// so that no minion decodes a list of thousands of others; a job for a few minions is published
// once per minion, on its own topic, and reaches nobody else.

// PubBuckets is the number of buckets minions are spread over by id.
const PubBuckets = 64

// TopicAll reaches every minion.
const TopicAll = "a"

// BucketOf returns the bucket of minion id.
func BucketOf(id string) int {
	h := fnv.New32a()
	h.Write([]byte(id))
	return int(h.Sum32() % PubBuckets)
}

// TopicBucket is the topic of bucket b. The trailing "." keeps "b1." from matching "b10.".
func TopicBucket(b int) string {
	return "b" + string(rune('0'+b/10)) + string(rune('0'+b%10)) + "."
}

// TopicMinion is the topic of minion id alone. The NUL ends it: ids never contain one, so
// "web1" does not match "web10".
func TopicMinion(id string) string { return "m" + id + "\x00" }

// MinionTopics returns the topics minion id subscribes to.
func MinionTopics(id string) []string {
	return []string{TopicAll, TopicBucket(BucketOf(id)), TopicMinion(id)}
}

// PubBody returns the envelope of a published message: the last frame (the first is the
// topic; a single-frame message is an envelope alone).
func PubBody(frames [][]byte) ([]byte, bool) {
	switch len(frames) {
	case 1:
		return frames[0], true
	case 2:
		return frames[1], true
	}
	return nil, false
}

// The publish port serves only minions with a session. A subscriber's first subscription is
// a credential, sent as a topic (ZeroMQ's SUB has no other message): the session id, the id of
// the session key and the session id sealed under that key with DomainSubscribe. The master
// admits the subscriber to that session's minion's topics (MinionTopics) and to nothing else,
// one subscriber per session. Until then it sends the subscriber nothing.

// SubCredential is the credential topic of session sid, sealed is the session id sealed under
// the session key keyID with DomainSubscribe.
func SubCredential(sid []byte, keyID [KeyIDLen]byte, sealed []byte) string {
	return string(SessionFrame(TSubscribe, sid, keyID, sealed))
}

// SplitSubCredential splits a credential topic; ok is false if topic is not one.
func SplitSubCredential(topic []byte) (sid []byte, keyID [KeyIDLen]byte, sealed []byte, ok bool) {
	typ, body, err := Decode(topic, HeaderLen+SessionIDLen+KeyIDLen+MaxSubSealed)
	if err != nil || typ != TSubscribe {
		return nil, keyID, nil, false
	}
	sid, keyID, sealed, err = SplitSession(body)
	return sid, keyID, sealed, err == nil
}

// IsSubCredential says whether a subscription topic is meant as a credential (it may still be
// a false one); no topic a minion subscribes to starts like one.
func IsSubCredential(topic []byte) bool {
	return len(topic) >= HeaderLen && string(topic[:len(magic)]) == magic
}

// MaxSubSealed bounds the sealed part of a credential: the domain tag and the session id, a box
// nonce and tag.
const MaxSubSealed = len(DomainSubscribe) + 1 + SessionIDLen + 24 + 16
