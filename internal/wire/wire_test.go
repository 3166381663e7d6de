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
	f.Add(SessionFrame(TRequest, make([]byte, SessionIDLen), [KeyIDLen]byte{1}, []byte("sealed")))
	f.Add(JobFrame(&[24]byte{}, []Wrap{{KeyID: [KeyIDLen]byte{1}, Key: make([]byte, wrapKeyLen)}}, []byte("payload")))
	f.Add(Encode(TAuth, AuthFrame(make([]byte, NonceLen), []byte("box"))))
	f.Add([]byte("brn\x02\x04"))
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
			jb, err := SplitJob(body)
			if err == nil {
				if jb.Wraps()*WrapEntryLen+len(jb.Payload) > len(body) {
					t.Fatal("job parts longer than the body")
				}
				if w, ok := jb.WrapFor([KeyIDLen]byte{1}); ok && len(w) != wrapKeyLen {
					t.Fatal("wrap of the wrong length")
				}
			}
		case TAuth:
			sn, sealed, err := SplitAuth(body)
			if err == nil && len(sn)+len(sealed) != len(body) {
				t.Fatal("auth parts do not add up")
			}
		case TRequest, TReply:
			sid, _, sealed, err := SplitSession(body)
			if err == nil && (len(sid) != SessionIDLen || len(sealed) > len(body)) {
				t.Fatal("session frame parts")
			}
		default:
			_, data, err := SplitSigned(body)
			if err != nil {
				return
			}
			var (
				ns NoSession
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
			for _, v := range []any{&ns, &c, &a, &ar, &r, &rp, &hb, &jm, &rt, &sr, &hr, &rb} {
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

func TestJobFrameRoundTrip(t *testing.T) {
	var nonce [24]byte
	nonce[0] = 7
	wraps := []Wrap{{KeyID: [KeyIDLen]byte{1}, Key: bytes.Repeat([]byte{0xa}, wrapKeyLen)}, {KeyID: [KeyIDLen]byte{2}, Key: bytes.Repeat([]byte{0xb}, wrapKeyLen)}}
	f := JobFrame(&nonce, wraps, []byte("payload"))
	if len(f) != JobFrameLen(2, 7) {
		t.Fatalf("frame length %d, JobFrameLen %d", len(f), JobFrameLen(2, 7))
	}
	typ, body, err := Decode(f, 1<<20)
	if err != nil || typ != TJob {
		t.Fatal(typ, err)
	}
	jb, err := SplitJob(body)
	if err != nil || jb.Nonce != nonce || jb.Wraps() != 2 || string(jb.Payload) != "payload" {
		t.Fatalf("%+v %v", jb, err)
	}
	if w, ok := jb.WrapFor([KeyIDLen]byte{2}); !ok || w[0] != 0xb {
		t.Fatal("wrap 2")
	}
	if _, ok := jb.WrapFor([KeyIDLen]byte{3}); ok {
		t.Fatal("wrap for a key not in the frame")
	}
	// A count beyond the body is refused, also one whose product overflows 32 bits.
	for _, n := range []uint32{3, 1 << 27, 0xffffffff} {
		bad := bytes.Clone(body)
		bad[24], bad[25], bad[26], bad[27] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
		if _, err := SplitJob(bad); err == nil {
			t.Fatalf("count %d accepted", n)
		}
	}
}

// FuzzSplitJob covers the job frame decoder a minion runs on everything published to it.
func FuzzSplitJob(f *testing.F) {
	f.Add(JobFrame(&[24]byte{}, []Wrap{{Key: make([]byte, wrapKeyLen)}}, []byte("x"))[HeaderLen:])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, body []byte) {
		jb, err := SplitJob(body)
		if err != nil {
			return
		}
		if jb.Wraps()*WrapEntryLen+len(jb.Payload)+28 != len(body) {
			t.Fatal("parts do not add up")
		}
		for i := range 4 {
			if w, ok := jb.WrapFor([KeyIDLen]byte{byte(i)}); ok && len(w) != wrapKeyLen {
				t.Fatal("wrap length")
			}
		}
	})
}

// FuzzSplitSession covers the request and reply framing.
func FuzzSplitSession(f *testing.F) {
	f.Add(SessionFrame(TRequest, make([]byte, SessionIDLen), [KeyIDLen]byte{}, []byte("x"))[HeaderLen:])
	f.Fuzz(func(t *testing.T, body []byte) {
		sid, _, sealed, err := SplitSession(body)
		if err == nil && len(sid)+KeyIDLen+len(sealed) != len(body) {
			t.Fatal("parts do not add up")
		}
	})
}
