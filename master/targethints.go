package master

import (
	"fmt"
	"sort"
	"strings"

	"github.com/agext/levenshtein"
)

// targetKinds are the prefixes of target terms (group:NAME, fact:KEY=VALUE).
var targetKinds = []string{"group", "fact"}

// unknownKind is the error of a term whose prefix is no target kind: minion ids cannot hold a
// colon, so "grop:app" is a typo, not an id.
func unknownKind(tok, kind string) error {
	msg := fmt.Sprintf("%q: %q is not a kind of target (a term is an id glob, group:NAME or fact:KEY=VALUE)", tok, kind+":")
	if s := nearest(kind, targetKinds, 2); s != "" {
		msg += fmt.Sprintf("; did you mean %q?", s+":"+strings.TrimPrefix(tok, kind+":"))
	}
	return fmt.Errorf("%s", msg)
}

// nearest returns the candidate closest to s within maxDist edits, or "".
func nearest(s string, candidates []string, maxDist int) string {
	best, bestD := "", maxDist+1
	for _, c := range candidates {
		if d := levenshtein.Distance(s, c, nil); d < bestD || (d == bestD && c < best) {
			best, bestD = c, d
		}
	}
	return best
}

// TargetCheck is what a target names that no minion has: literal ids that are no accepted
// minion, and group names and fact keys no minion holds, each with a hint.
type TargetCheck struct {
	Unknown []string // literal ids (no glob character) that are no accepted minion
	Hints   []string // one sentence each, with "did you mean" when a known name is close
}

// String joins the hints, one a line.
func (c TargetCheck) String() string { return strings.Join(c.Hints, "\n") }

// checkTarget looks at the terms of target that are not under `not`: a literal id no accepted
// minion has, a literal group no minion is in, a fact key no minion reports.
func (m *Master) checkTarget(target string, site *Site) TargetCheck {
	t, err := ParseTarget(target)
	if err != nil {
		return TargetCheck{}
	}
	minions := site.extend(m.Minions())
	var ids []string
	groups, facts := map[string]bool{}, map[string]bool{}
	for _, mi := range minions {
		ids = append(ids, mi.ID)
		for _, g := range mi.Groups {
			groups[g] = true
		}
		factPaths("", mi.Facts, facts, 0)
	}
	var c TargetCheck
	known := map[string]bool{}
	for _, id := range ids {
		known[id] = true
	}
	seen := map[string]bool{}
	var walk func(Target)
	walk = func(t Target) {
		switch x := t.(type) {
		case binary:
			walk(x.l)
			walk(x.r)
		case idT:
			for _, g := range x {
				if isGlob(g) || known[g] || seen["id:"+g] {
					continue
				}
				seen["id:"+g] = true
				c.Unknown = append(c.Unknown, g)
				h := fmt.Sprintf("%s: no accepted minion has this id", g)
				if k, ok := m.keys.Get(g); ok {
					h += fmt.Sprintf(" (its key is %s", k.State)
					if k.State == "pending" {
						h += ": brine key accept " + g
					}
					h += ")"
				} else if s := nearest(g, ids, 2); s != "" {
					h += fmt.Sprintf("; did you mean %s?", s)
				}
				c.Hints = append(c.Hints, h)
			}
		case groupT:
			g := string(x)
			if isGlob(g) || groups[g] || seen["group:"+g] {
				return
			}
			seen["group:"+g] = true
			h := fmt.Sprintf("group:%s: no minion is in group %q", g, g)
			if s := nearest(g, keys(groups), 2); s != "" {
				h += fmt.Sprintf("; did you mean group:%s?", s)
			}
			c.Hints = append(c.Hints, h)
		case factT:
			if facts[x.key] || seen["fact:"+x.key] {
				return
			}
			seen["fact:"+x.key] = true
			h := fmt.Sprintf("fact:%s=%s: no minion reports a fact %q", x.key, x.glob, x.key)
			if s := nearest(x.key, keys(facts), 2); s != "" {
				h += fmt.Sprintf("; did you mean fact:%s=%s?", s, x.glob)
			}
			c.Hints = append(c.Hints, h)
		}
	}
	walk(t)
	return c
}

// factPaths adds the dotted paths of f's keys to out (nested maps, a few levels deep).
func factPaths(prefix string, f map[string]any, out map[string]bool, depth int) {
	if depth > 4 || len(out) > 10000 {
		return
	}
	for k, v := range f {
		p := prefix + k
		out[p] = true
		if mm, ok := v.(map[string]any); ok {
			factPaths(p+".", mm, out, depth+1)
		}
	}
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func isGlob(s string) bool { return strings.ContainsAny(s, `*?[\`) }

// noMinionsError is ErrNoMinions with what the target named that does not exist.
func noMinionsError(c TargetCheck) error {
	if len(c.Hints) == 0 {
		return ErrNoMinions
	}
	return fmt.Errorf("%w\n%s", ErrNoMinions, c.String())
}

// emitTargetCheck sends an "unknown" event when the target names ids, groups or facts that do
// not exist (the job still goes to the minions it matches; the CLI exits 2 for unknown ids).
func emitTargetCheck(c TargetCheck, emit func(Event)) {
	if len(c.Hints) > 0 {
		emit(Event{Event: "unknown", Minions: c.Unknown, Hint: c.String()})
	}
}
