package minion

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/brinecm/brine/internal/wire"
)

// ownMeta is a job's meta as one minion decodes it. The meta of a job copy names every minion
// the copy addresses: up to a bucket's share of a large fleet, about 140 of 9,000. A minion only
// needs to find its own id among them, and decoding them all into strings (with Peers, whose
// numbers need wire.Unmarshal's Decoder path) cost each minion of a 9,000-minion ping 32 us and
// 162 allocations per job, against 16 us and 10 this way. In the swarm, where one process plays
// thousands of minions, that decoding was its largest cost (15.7% of its CPU during pings of
// 9,000, with garbage for the collector's 19.3%: BENCHMARKS.md).
type ownMeta struct {
	wire.JobMeta
	// These shadow JobMeta's fields of the same names (a field of the outer struct wins).
	Minions json.RawMessage `json:"minions"`
	Peers   json.RawMessage `json:"peers,omitempty"`
}

// readMeta decodes raw, a job's meta, for minion id: addressed says whether the job names id,
// and meta.Minions holds id alone when it does.
func readMeta(raw []byte, id string) (meta wire.JobMeta, addressed bool, err error) {
	// json.Unmarshal, not wire.Unmarshal: JobMeta.Peers, shadowed here, would still send
	// wire.Unmarshal down its Decoder path (for json.Number), which copies raw first.
	if len(raw) > wire.MaxJobFrame {
		return meta, false, wire.ErrTooLarge
	}
	var om ownMeta
	if err := json.Unmarshal(raw, &om); err != nil {
		return meta, false, fmt.Errorf("wire: %w", err)
	}
	meta = om.JobMeta
	if addressed, err = inArray(om.Minions, id); err != nil || !addressed {
		return meta, false, err
	}
	meta.Minions = []string{id}
	if len(om.Peers) > 0 && string(om.Peers) != "null" {
		if err := wire.Unmarshal(om.Peers, wire.MaxJobFrame, &meta.Peers); err != nil {
			return meta, false, err
		}
	}
	return meta, true, nil
}

var errMinionsNotStrings = errors.New("wire: a job's minions are not a list of strings")

// inArray reports whether raw, a JSON value that json.Unmarshal has already checked, is an
// array holding the string s (null holds nothing).
func inArray(raw []byte, s string) (bool, error) {
	i := skipSpace(raw, 0)
	if i == len(raw) || string(bytes.TrimRight(raw[i:], " \t\r\n")) == "null" {
		return false, nil
	}
	if raw[i] != '[' {
		return false, errMinionsNotStrings
	}
	if i = skipSpace(raw, i+1); i < len(raw) && raw[i] == ']' {
		return false, nil
	}
	for {
		if i >= len(raw) || raw[i] != '"' {
			return false, errMinionsNotStrings
		}
		j, escaped := i+1, false
		for ; j < len(raw) && raw[j] != '"'; j++ {
			if raw[j] == '\\' {
				escaped = true
				j++ // the escaped character, a quote among them
			}
		}
		if j >= len(raw) {
			return false, errMinionsNotStrings
		}
		if escaped {
			var u string
			if err := json.Unmarshal(raw[i:j+1], &u); err != nil {
				return false, err
			}
			if u == s {
				return true, nil
			}
		} else if string(raw[i+1:j]) == s {
			return true, nil
		}
		switch i = skipSpace(raw, j+1); {
		case i < len(raw) && raw[i] == ',':
			i = skipSpace(raw, i+1)
		case i < len(raw) && raw[i] == ']':
			return false, nil
		default:
			return false, errMinionsNotStrings
		}
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}
