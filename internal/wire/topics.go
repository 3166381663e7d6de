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
