package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

// decodeWithNumbers is Unmarshal's general path: a Decoder with UseNumber.
func decodeWithNumbers(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if len(bytes.TrimLeft(data[dec.InputOffset():], " \t\r\n")) > 0 {
		return errors.New("trailing data")
	}
	return nil
}

func TestHoldsInterface(t *testing.T) {
	type tree struct {
		Kids []*tree
		Name string
	}
	type anyTree struct {
		Kids []*anyTree
		Meta map[string]any
	}
	for _, c := range []struct {
		v    any
		want bool
	}{
		{nil, true},
		{&Request{}, false},
		{&SignedReturn{}, false},
		{&Return{}, false},
		{&ResendBody{}, false},
		{&tree{}, false},
		{&JobMeta{}, true}, // Peers: []map[string]any
		{&map[string]any{}, true},
		{&anyTree{}, true},
		{new(any), true},
		{&[]json.RawMessage{}, false},
	} {
		if got := holdsInterface(reflect.TypeOf(c.v)); got != c.want {
			t.Errorf("holdsInterface(%T) = %v, want %v", c.v, got, c.want)
		}
	}
}

// Unmarshal decodes values without interfaces in place, and numbers in interface values as
// json.Number; both paths refuse what is too large, trailing data and malformed JSON.
func TestUnmarshalPaths(t *testing.T) {
	var r Request
	if err := Unmarshal([]byte(`{"seq":18446744073709551615,"kind":"return","body":{"a":1}}`), 1<<10, &r); err != nil ||
		r.Seq != 18446744073709551615 || r.Kind != KindReturn || string(r.Body) != `{"a":1}` {
		t.Fatalf("request: %+v %v", r, err)
	}
	var f map[string]any
	if err := Unmarshal([]byte(`{"mem":9007199254740993}`), 1<<10, &f); err != nil || f["mem"] != json.Number("9007199254740993") {
		t.Fatalf("facts: %#v %v", f, err)
	}
	for _, bad := range []string{`{"seq":1} {}`, `{"seq":1}]`, `{"seq":`, ``, `[]`, `{"seq":"1"}`} {
		var r Request
		var m map[string]any
		if Unmarshal([]byte(bad), 1<<10, &r) == nil || (bad != `{"seq":"1"}` && bad != `[]` && Unmarshal([]byte(bad), 1<<10, &m) == nil) {
			t.Errorf("%q accepted", bad)
		}
	}
	if err := Unmarshal([]byte(`{"seq":1}`), 4, &r); err != ErrTooLarge {
		t.Errorf("limit: %v", err)
	}
}

// FuzzUnmarshalInPlace: what the in-place path accepts, the Decoder path accepts too, with the
// same value.
func FuzzUnmarshalInPlace(f *testing.F) {
	f.Add([]byte(`{"seq":1,"kind":"return","body":{"data":"eyJqaWQiOiJ4In0=","sig":"AAAA"}}`))
	f.Add([]byte(`{"jid":"x","minion":"m","success":true,"report":[1,2],"started":"2026-12-01T00:00:00Z"}`))
	f.Add([]byte(`{"data":"eyJqaWQiOiJ4In0=","sig":"AAAA"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, mk := range []func() any{
			func() any { return new(Request) }, func() any { return new(Return) }, func() any { return new(SignedReturn) },
		} {
			fast, slow := mk(), mk()
			if Unmarshal(data, 1<<20, fast) != nil {
				continue
			}
			if err := decodeWithNumbers(data, slow); err != nil {
				t.Fatalf("%T: accepted in place, refused by the Decoder: %v", fast, err)
			}
			if !reflect.DeepEqual(fast, slow) {
				t.Fatalf("%T: %+v in place, %+v by the Decoder", fast, fast, slow)
			}
		}
	})
}
