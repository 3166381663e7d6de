package master

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/brinecm/brine/states"
	"github.com/brinecm/brine/states/resources/builtin"
)

// The facts a real minion reports of this host, through JSON as the wire carries them, pass the
// master's check: the shapes cleanFacts demands are those states.Facts produces.
func TestThisHostsFactsAreAccepted(t *testing.T) {
	raw, err := json.Marshal(states.Facts(builtin.Types(), map[string]any{"role": "web server (eu-1)"}))
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var f map[string]any
	if err := dec.Decode(&f); err != nil {
		t.Fatal(err)
	}
	if _, err := cleanFacts(f); err != nil {
		t.Fatalf("this host's facts were refused: %v\n%s", err, raw)
	}
}
