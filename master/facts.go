package master

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"

	"github.com/brinecm/brine/states"
)

// Facts are claims: a minion reports what it likes. The master normalises, bounds and validates
// them on arrival (DESIGN.md invariant 20) and refuses the whole report when anything is wrong;
// the minion then keeps its previous facts. The same check runs on the facts a master finds in
// its store at start, which an older master may have accepted unchecked.

// Limits on one minion's facts, beyond wire.MaxFacts on their encoded size.
const (
	maxFactDepth  = 8        // nesting of objects and lists
	maxFactKeys   = 4096     // keys of every object together
	maxFactItems  = 16384    // list elements, keys and scalars together
	maxFactKeyLen = 128      // bytes of one key
	maxFactString = 64 << 10 // bytes of one string value
	maxFactNumber = 40       // characters of one number
)

// Facts reports, per minion: a minion reports its facts when a session starts and after an apply
// that changed them, and checking a report costs the master up to tens of milliseconds (a
// report of maxFactItems values converts to a language value: 40-70 ms for 20,000). The
// transport's rates (200 messages and 1 MiB a second) let a compromised minion send 30 such
// reports a second, over a core; these let it make the master check one every 2 s.
const (
	factsRate   = 0.5 // reports per second per minion, on average
	factsBurst  = 30
	factsMinion = 1 << 16 // minions tracked at once; those with a full bucket are forgotten first
)

// errFactsTooOften refuses a facts report over the minion's rate; the master keeps its previous
// facts, and the minion sends them again with its next report.
var errFactsTooOften = errors.New("facts reported too often (at most 30 at once, then one every 2 s): the master keeps the previous ones")

func newFactsLimiter(cfg Config) *keyedLimiter {
	l := &keyedLimiter{rate: factsRate, burst: factsBurst, max: factsMinion}
	if cfg.factsRate > 0 || cfg.factsBurst > 0 {
		l.rate, l.burst = cfg.factsRate, cfg.factsBurst
	}
	return l
}

// reservedFacts are set by the master, never by a minion: id, groups and claimed_groups (what the
// master granted or computed) replace what a minion says; attested is refused, so that nobody
// mistakes a claim for it.
var reservedFacts = map[string]bool{"id": true, "groups": true, "claimed_groups": true}

// maxTincNetworks bounds the tinc networks of one minion: in one report, and pinned in its
// attestation over all its reports (attest.go).
const maxTincNetworks = 16

// tincNetRE is a tinc network name, as tinc_network takes it.
var tincNetRE = regexp.MustCompile(`^[A-Za-z0-9_]{1,32}$`)

// cleanFacts returns facts with every object key in Unicode NFC, or an error saying what is wrong:
// two keys equal after normalisation (go-cty panics on them), limits passed, a key that is empty,
// too long or holds a control character, a number that is not a finite one, or a well-known fact
// of the wrong type (tinc_pubkey: network name -> exactly one PEM public key).
func cleanFacts(in map[string]any) (map[string]any, error) {
	c := &factCleaner{}
	out, err := c.value(in, "", 0, factPlain)
	if err != nil {
		return nil, err
	}
	f := out.(map[string]any)
	if _, ok := f["attested"]; ok {
		return nil, errors.New(`fact "attested" is reserved: the master sets it in peers() from what it observed itself`)
	}
	for k := range reservedFacts {
		delete(f, k)
	}
	if tk, ok := f["tinc_pubkey"]; ok {
		keys, ok := tk.(map[string]any)
		if !ok {
			return nil, errors.New("fact tinc_pubkey: want an object of network name = public key")
		}
		if len(keys) > maxTincNetworks {
			return nil, fmt.Errorf("fact tinc_pubkey: %d networks, over the %d one minion may have", len(keys), maxTincNetworks)
		}
		for netName, v := range keys {
			s, ok := v.(string)
			if !ok || !tincNetRE.MatchString(netName) {
				return nil, fmt.Errorf("fact tinc_pubkey.%s: want a tinc network name (letters, digits, '_') and a key", quoteKey(netName))
			}
			canon, err := states.ParseTincPublicKey(s)
			if err != nil {
				return nil, fmt.Errorf("fact tinc_pubkey.%s: %v", netName, err)
			}
			keys[netName] = canon
		}
	}
	if err := checkAddressFacts(f); err != nil {
		return nil, err
	}
	if err := checkHostFacts(f); err != nil {
		return nil, err
	}
	// What a bundle does with the facts (minion.facts, peers()) must not fail on them either.
	if err := states.CheckData(f); err != nil {
		return nil, fmt.Errorf("facts: %v", err)
	}
	return f, nil
}

type factCleaner struct{ keys, items int }

// Where a value is, for the rule on strings: a fact's string is one line of text, except the
// keys of tinc_pubkey (the object at the top level, not a key that merely starts with its
// name), which are PEM text that cleanFacts parses and writes anew.
const (
	factPlain    = iota
	factTincKeys // the object f["tinc_pubkey"]
	factTincKey  // one of its values
)

func (c *factCleaner) value(v any, path string, depth, where int) (any, error) {
	c.items++
	if c.items > maxFactItems {
		return nil, fmt.Errorf("facts: more than %d values", maxFactItems)
	}
	switch x := v.(type) {
	case nil, bool:
		return x, nil
	case string:
		if len(x) > maxFactString {
			return nil, fmt.Errorf("fact %s: a string of %d bytes, over the %d byte limit", pathOr(path), len(x), maxFactString)
		}
		if !utf8.ValidString(x) {
			return nil, fmt.Errorf("fact %s: not valid UTF-8", pathOr(path))
		}
		if i := strings.IndexFunc(x, lineBreaking); i >= 0 && where != factTincKey {
			r, _ := utf8.DecodeRuneInString(x[i:])
			return nil, fmt.Errorf("fact %s: holds %U at byte %d; a fact is one line of text, without control, bidirectional or zero-width characters", pathOr(path), r, i)
		}
		return x, nil
	case json.Number:
		return checkNumber(string(x), path, x)
	case float64:
		return checkNumber(strconv.FormatFloat(x, 'g', -1, 64), path, x)
	case int:
		return x, nil
	case []any:
		if depth >= maxFactDepth {
			return nil, fmt.Errorf("fact %s: nested deeper than %d levels", pathOr(path), maxFactDepth)
		}
		out := make([]any, len(x))
		for i, e := range x {
			var err error
			if out[i], err = c.value(e, fmt.Sprintf("%s[%d]", path, i), depth+1, factPlain); err != nil {
				return nil, err
			}
		}
		return out, nil
	case map[string]any:
		if depth >= maxFactDepth {
			return nil, fmt.Errorf("fact %s: nested deeper than %d levels", pathOr(path), maxFactDepth)
		}
		c.keys += len(x)
		if c.keys > maxFactKeys {
			return nil, fmt.Errorf("facts: more than %d keys", maxFactKeys)
		}
		// Sorted, so that the error about a collision is the same every time.
		names := make([]string, 0, len(x))
		for k := range x {
			names = append(names, k)
		}
		sort.Strings(names)
		out := make(map[string]any, len(x))
		from := map[string]string{}
		for _, k := range names {
			if err := checkKey(k, path); err != nil {
				return nil, err
			}
			nk := norm.NFC.String(k)
			if prev, dup := from[nk]; dup {
				return nil, fmt.Errorf("facts: keys %s and %s of %s are the same name after Unicode normalisation (NFC)", quoteKey(prev), quoteKey(k), pathOr(path))
			}
			from[nk] = k
			sub := nk
			if path != "" {
				sub = path + "." + nk
			}
			sw := factPlain
			switch {
			case depth == 0 && nk == "tinc_pubkey":
				sw = factTincKeys
			case where == factTincKeys:
				sw = factTincKey
			}
			e, err := c.value(x[k], sub, depth+1, sw)
			if err != nil {
				return nil, err
			}
			out[nk] = e
		}
		return out, nil
	}
	return nil, fmt.Errorf("fact %s: a %T is not a JSON value", pathOr(path), v)
}

// lineBreaking reports whether r may not be in a fact's key or string: a control character (a
// newline or a tab would add a line or a field to every host's file built from the peers'
// facts), a line or paragraph separator, a bidirectional control (which makes a file read
// differently from what it holds), or the zero-width space, word joiner or byte order mark
// (which make two names look one). Other format characters (the zero-width joiners that
// Persian, Indic scripts and emoji need, the soft hyphen) are text.
func lineBreaking(r rune) bool {
	switch r {
	case '\u2028', '\u2029', '\u200b', '\u2060', '\ufeff':
		return true
	}
	return unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r)
}

func checkKey(k, path string) error {
	switch {
	case k == "":
		return fmt.Errorf("fact %s: an empty key", pathOr(path))
	case len(k) > maxFactKeyLen:
		return fmt.Errorf("fact %s: a key of %d bytes, over the %d byte limit", pathOr(path), len(k), maxFactKeyLen)
	case !utf8.ValidString(k):
		return fmt.Errorf("fact %s: a key that is not valid UTF-8", pathOr(path))
	case strings.ContainsFunc(k, func(r rune) bool { return lineBreaking(r) || r == utf8.RuneError }):
		return fmt.Errorf("fact %s: key %s holds a control, line-separator, bidirectional or zero-width character", pathOr(path), quoteKey(k))
	}
	return nil
}

func checkNumber(s, path string, v any) (any, error) {
	if len(s) > maxFactNumber {
		return nil, fmt.Errorf("fact %s: a number of %d characters, over the %d character limit", pathOr(path), len(s), maxFactNumber)
	}
	if _, err := strconv.ParseFloat(s, 64); err != nil {
		return nil, fmt.Errorf("fact %s: %q is not a finite number", pathOr(path), s)
	}
	return v, nil
}

func pathOr(p string) string {
	if p == "" {
		return "(top level)"
	}
	return quoteKey(p)
}

// quoteKey quotes a minion's text for a message: control characters and non-ASCII escaped, so
// that neither an operator's terminal nor a log line takes it for something else.
func quoteKey(s string) string {
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	return strconv.QuoteToASCII(s)
}

// checkAddressFacts checks the address facts that brine itself reports (states.Facts): ipv4 and
// ipv6, and those of every interface, are lists of single addresses of their family, not
// networks or text (an IPv6 zone, "fe80::1%eth0", is text: refused); an interface's name is one
// the kernel takes and its mac one hardware address (or empty).
func checkAddressFacts(f map[string]any) error {
	list := func(v any, where string, six bool) error {
		if v == nil {
			return nil
		}
		xs, ok := v.([]any)
		if !ok {
			return fmt.Errorf("fact %s: want a list of addresses", where)
		}
		for i, x := range xs {
			s, _ := x.(string)
			a, err := netip.ParseAddr(s)
			if err == nil && a.Zone() != "" {
				// A zone is any text after the '%' (newlines, quotes, "$(...)"): the address
				// would carry it into every host's file that lists the peers' addresses.
				// brine's own facts never hold one (states.Facts writes net.IP, zoneless).
				return fmt.Errorf("fact %s[%d] = %s: an address with a zone; want one address without one", where, i, quoteKey(s))
			}
			if err != nil || a.Is6() != six || (six && a.Is4In6()) || len(s) > 64 {
				return fmt.Errorf("fact %s[%d] = %s: not one IP%s address", where, i, quoteKey(fmt.Sprint(x)), map[bool]string{false: "v4", true: "v6"}[six])
			}
		}
		return nil
	}
	for _, fam := range []string{"ipv4", "ipv6"} {
		if err := list(f[fam], fam, fam == "ipv6"); err != nil {
			return err
		}
	}
	ifs, ok := f["interfaces"]
	if !ok {
		return nil
	}
	m, ok := ifs.(map[string]any)
	if !ok {
		return errors.New("fact interfaces: want an object of interface name = { ipv4, ipv6, mac }")
	}
	for name, v := range m {
		if !states.FactIfaceName(name) {
			return fmt.Errorf("fact interfaces.%s: not an interface name (1 to 15 letters, digits and '_', '.', '@' or '-')", quoteKey(name))
		}
		ifc, ok := v.(map[string]any)
		if !ok {
			return fmt.Errorf("fact interfaces.%s: want an object", quoteKey(name))
		}
		if mac, ok := ifc["mac"]; ok && mac != nil {
			s, ok := mac.(string)
			if _, err := net.ParseMAC(s); !ok || (s != "" && err != nil) {
				return fmt.Errorf("fact interfaces.%s.mac = %s: not one hardware address", quoteKey(name), quoteKey(fmt.Sprint(mac)))
			}
		}
		for _, fam := range []string{"ipv4", "ipv6"} {
			if err := list(ifc[fam], "interfaces."+quoteKey(name)+"."+fam, fam == "ipv6"); err != nil {
				return err
			}
		}
	}
	return nil
}

// The host facts that brine reports itself (states.Facts) have the shape they have on every host,
// so that a bundle may write a peer's into another host's configuration without quoting:
// hostname and fqdn are host names (states.FactHostName), os, os_version, arch and kernel one
// word (states.FactWord), cpus and memory_mb whole numbers. os_name (os-release's PRETTY_NAME)
// is text, with the rules of every string.
func checkHostFacts(f map[string]any) error {
	str := func(ok func(string) bool) func(any) bool {
		return func(v any) bool { s, isStr := v.(string); return isStr && ok(s) }
	}
	for _, t := range []struct {
		keys []string
		ok   func(any) bool
		want string
	}{
		{[]string{"hostname", "fqdn"}, str(states.FactHostName), "not a host name (labels of letters, digits, '-' and '_', separated by dots)"},
		{[]string{"os", "os_version", "arch", "kernel"}, str(states.FactWord), "want one word of at most 64 letters, digits and '.', '_', '+', '~', ':' or '-'"},
		{[]string{"cpus", "memory_mb"}, wholeNumber, "want a whole number"},
	} {
		for _, k := range t.keys {
			if v, ok := f[k]; ok && v != nil && !t.ok(v) {
				return fmt.Errorf("fact %s = %s: %s", k, quoteKey(fmt.Sprint(v)), t.want)
			}
		}
	}
	return nil
}

// wholeNumber reports whether v, a fact's value as decoded, is a number without a fraction.
func wholeNumber(v any) bool {
	switch x := v.(type) {
	case int:
		return x >= 0
	case float64:
		return x >= 0 && x == float64(int64(x))
	case json.Number:
		n, err := strconv.ParseUint(string(x), 10, 64)
		return err == nil && n <= 1<<53
	}
	return false
}
