package wire

import (
	"bytes"
	"testing"
)

func TestEnvelopeRoundTripAndVersion(t *testing.T) {
	f := Encode(TRequest, []byte("body"))
	typ, body, err := Decode(f, 100)
	if err != nil || typ != TRequest || string(body) != "body" {
		t.Fatalf("round trip: %v %v %q", typ, err, body)
	}
	for _, v := range []byte{0, Version - 1, Version + 1, 255} {
		if v == Version {
			continue
		}
		old := bytes.Clone(f)
		old[3] = v
		if _, _, err := Decode(old, 100); err != ErrVersion {
			t.Errorf("version %d: %v", v, err)
		}
	}
	if _, _, err := Decode(f, 5); err != ErrTooLarge {
		t.Errorf("limit: %v", err)
	}
	if _, _, err := Decode([]byte("brn"), 100); err != ErrShort {
		t.Errorf("short: %v", err)
	}
}

func TestJobPacking(t *testing.T) {
	meta, bundle, err := UnpackJob(PackJob([]byte(`{"jid":"1"}`), []byte("tar")))
	if err != nil || string(meta) != `{"jid":"1"}` || string(bundle) != "tar" {
		t.Fatalf("%q %q %v", meta, bundle, err)
	}
	bad := PackJob([]byte("meta"), nil)
	bad[len(jobTag)] = 0xff // length beyond the content
	if _, _, err := UnpackJob(bad); err == nil {
		t.Fatal("length beyond content accepted")
	}
}

// FuzzDecode covers the envelope and every body decoder a peer can reach.
func FuzzDecode(f *testing.F) {
	f.Add(Encode(THello, []byte(`{"id":"a","key":"k","nonce":"AAAA"}`)))
	f.Add(Encode(TRequest, append(make([]byte, 64), `{"sid":"AA==","seq":1,"kind":"facts","body":{}}`...)))
	f.Add(Encode(TJob, append(make([]byte, 8), PackJob([]byte(`{}`), []byte("x"))...)))
	f.Add([]byte("brn\x01\x04"))
	f.Fuzz(func(t *testing.T, frame []byte) {
		typ, body, err := Decode(frame, 1<<20)
		if err != nil {
			return
		}
		switch typ {
		case THello:
			var h Hello
			_ = Unmarshal(body, 1<<16, &h)
		case TJob:
			_, sealed, err := SplitJob(body)
			if err == nil {
				_, _, _ = UnpackJob(sealed)
			}
		default:
			_, data, err := SplitSigned(body)
			if err != nil {
				return
			}
			var (
				c  Challenge
				a  Auth
				ar AuthReply
				r  Request
				rp Reply
				hb Heartbeat
				jm JobMeta
				rt Return
				sr SignedReturn
				hr HeartbeatReply
				rb ResendBody
			)
			for _, v := range []any{&c, &a, &ar, &r, &rp, &hb, &jm, &rt, &sr, &hr, &rb} {
				_ = Unmarshal(data, 1<<20, v)
			}
		}
	})
}

func FuzzUnpackJob(f *testing.F) {
	f.Add(PackJob([]byte(`{"jid":"x"}`), []byte("bundle")))
	f.Fuzz(func(t *testing.T, content []byte) {
		meta, bundle, err := UnpackJob(content)
		if err == nil && len(meta)+len(bundle) > len(content) {
			t.Fatal("parts longer than input")
		}
	})
}

// FuzzPubBody covers the topic framing of everything a minion receives on its subscription.
func FuzzPubBody(f *testing.F) {
	f.Add([]byte(TopicAll), Encode(THeartbeat, []byte("x")))
	f.Add([]byte(TopicMinion("web1")), []byte{})
	f.Fuzz(func(t *testing.T, topic, body []byte) {
		for _, frames := range [][][]byte{{body}, {topic, body}, {topic, body, body}, {}} {
			if b, ok := PubBody(frames); ok && len(b) > len(topic)+2*len(body) {
				t.Fatal("body longer than the frames")
			}
		}
	})
}
