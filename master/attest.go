package master

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/brinecm/brine/internal/store"
	"github.com/brinecm/brine/states"
)

// Attested values are what the master vouches for about a minion, as opposed to its facts, which
// are the minion's claims: the address its connection comes from (seen by the kernel, not said
// by the minion) and the tinc public keys it pinned on first report, like a minion key. A key
// that changes afterwards waits as pending until the operator accepts it (`brine key
// accept-tinc`); until then peers() keeps offering the pinned one. Bundles that write another
// host's tinc host files or firewall rules take these, under peers()[i].attested.

// Attestation is what the master attests about one minion.
type Attestation struct {
	// Address is the address the minion last reported its facts from.
	Address string `json:"address,omitempty"`
	// Tinc holds the pinned tinc public key of each network, by network name.
	Tinc map[string]string `json:"tinc,omitempty"`
	// TincPending holds reported keys that differ from the pinned ones, waiting for the operator.
	TincPending map[string]string `json:"tinc_pending,omitempty"`
	// Since is when TincPending last changed.
	Since time.Time `json:"since,omitzero"`
}

// peerValue is the attested object of a peers() entry: address ("" while unknown) and
// tinc_pubkey (network -> pinned key).
func (a Attestation) peerValue() map[string]any {
	keys := map[string]any{}
	for k, v := range a.Tinc {
		keys[k] = v
	}
	return map[string]any{"address": a.Address, "tinc_pubkey": keys}
}

// attestStore keeps attestations in the master's store (one JSON record per minion), checked
// again whenever they are read.
type attestStore struct {
	kv  store.Attested
	log func(msg string, args ...any)
}

// check validates a stored attestation: written by us, but read back from the store.
func (a Attestation) check() error {
	if a.Address != "" {
		if _, err := netip.ParseAddr(a.Address); err != nil {
			return fmt.Errorf("address: %w", err)
		}
	}
	for _, m := range []map[string]string{a.Tinc, a.TincPending} {
		for n, k := range m {
			if !tincNetRE.MatchString(n) {
				return fmt.Errorf("tinc network %q", n)
			}
			if _, err := states.ParseTincPublicKey(k); err != nil {
				return fmt.Errorf("tinc key of %s: %w", n, err)
			}
		}
	}
	return nil
}

// decode reads a stored attestation; an unreadable one counts as none (the minion reports
// again).
func (s *attestStore) decode(id string, data []byte) Attestation {
	var a Attestation
	if data == nil {
		return a
	}
	err := json.Unmarshal(data, &a)
	if err == nil {
		err = a.check()
	}
	if err != nil {
		s.log("dropped an unreadable attestation", "minion", id, "err", err)
		return Attestation{}
	}
	return a
}

func (s *attestStore) get(id string) Attestation {
	data, err := s.kv.Get(id)
	if err != nil {
		s.log("could not read an attestation", "minion", id, "err", err)
		return Attestation{}
	}
	return s.decode(id, data)
}

// update applies fn to id's attestation and saves it when it changed, atomically for all
// masters of the store.
func (s *attestStore) update(id string, fn func(a *Attestation)) (Attestation, error) {
	var out Attestation
	err := s.kv.Update(id, func(old []byte) ([]byte, error) {
		prev := s.decode(id, old)
		a := prev.clone()
		fn(&a)
		out = a
		before, _ := json.Marshal(prev)
		after, _ := json.Marshal(a)
		if old != nil && string(before) == string(after) {
			return nil, nil
		}
		if old == nil && string(after) == "{}" {
			return nil, nil
		}
		return after, nil
	})
	if err != nil {
		return out, fmt.Errorf("save attestation of %s: %w", id, err)
	}
	return out, nil
}

func (s *attestStore) forget(id string) {
	if err := s.kv.Delete(id); err != nil {
		s.log("could not forget an attestation", "minion", id, "err", err)
	}
}

func (a Attestation) clone() Attestation {
	c := a
	c.Tinc = cloneStrings(a.Tinc)
	c.TincPending = cloneStrings(a.TincPending)
	return c
}

func cloneStrings(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// observe records what the master saw with a facts report of minion id: the remote address
// (when known) and the tinc keys of its clean facts. A network's first key is pinned; a different
// one later is kept pending for the operator. It returns the networks whose key is pending.
//
// A minion holds at most maxTincNetworks networks (pinned or pending): each report could name
// new ones, and what is pinned stays, so without a bound one minion could grow its record (and
// every peers() entry of it) report after report. A report naming a network beyond the bound
// is refused; the networks it names that are already known are still observed.
func (s *attestStore) observe(id string, remote netip.Addr, facts map[string]any) ([]string, error) {
	reported := map[string]string{}
	if keys, ok := facts["tinc_pubkey"].(map[string]any); ok {
		for n, v := range keys {
			if k, ok := v.(string); ok {
				reported[n] = k // cleanFacts parsed and re-encoded it
			}
		}
	}
	var pending, refused []string
	_, err := s.update(id, func(a *Attestation) {
		if remote.IsValid() {
			a.Address = remote.Unmap().String()
		}
		for n, k := range reported {
			switch pinned, ok := a.Tinc[n]; {
			case !ok && len(a.Tinc) >= maxTincNetworks:
				refused = append(refused, n)
			case !ok:
				if a.Tinc == nil {
					a.Tinc = map[string]string{}
				}
				a.Tinc[n] = k
			case pinned == k:
				if _, was := a.TincPending[n]; was {
					delete(a.TincPending, n) // back to the pinned key
					a.Since = time.Now().UTC()
				}
			default:
				if a.TincPending[n] != k {
					if a.TincPending == nil {
						a.TincPending = map[string]string{}
					}
					a.TincPending[n] = k
					a.Since = time.Now().UTC()
				}
			}
		}
		for n := range a.TincPending {
			pending = append(pending, n)
		}
		if len(a.TincPending) == 0 {
			a.TincPending = nil
		}
	})
	sort.Strings(pending)
	if err == nil && len(refused) > 0 {
		sort.Strings(refused)
		err = fmt.Errorf("tinc_pubkey: %s has %d tinc networks pinned, the most one minion may have; refused the new ones (%s)",
			id, maxTincNetworks, strings.Join(refused, ", "))
	}
	return pending, err
}

// acceptTinc pins the pending tinc keys of id for the networks that match glob.
func (s *attestStore) acceptTinc(id, netGlob string) ([]string, error) {
	var accepted []string
	_, err := s.update(id, func(a *Attestation) {
		for n, k := range a.TincPending {
			if ok, _ := path.Match(netGlob, n); !ok {
				continue
			}
			if a.Tinc == nil {
				a.Tinc = map[string]string{}
			}
			a.Tinc[n] = k
			delete(a.TincPending, n)
			accepted = append(accepted, n)
		}
		if len(a.TincPending) == 0 {
			a.TincPending = nil
		}
	})
	sort.Strings(accepted)
	if err == nil && len(accepted) == 0 {
		return nil, errors.New("no pending tinc key change")
	}
	return accepted, err
}

// Attestation returns what the master vouches for about minion id (the zero value when
// nothing).
func (m *Master) Attestation(id string) Attestation { return m.attest.get(id) }
