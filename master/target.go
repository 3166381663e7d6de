package master

import (
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"
)

// MinionInfo is what a target is matched against: an accepted minion's id, the groups the
// master granted it, and its last reported facts.
type MinionInfo struct {
	ID     string
	Groups []string
	Facts  map[string]any
	// Claimed are the site groups among Groups that the minion is in only through its facts
	// (a fact: target, or a group that names one): claims, kept apart in peers() entries.
	Claimed []string
}

// Target is a parsed target expression:
//
//	web*                  glob on the minion id
//	web1,web2,db*         a list of globs
//	group:app             membership of a group (the name may be a glob)
//	fact:os=debian        a fact (dotted path into nested facts) whose value matches a glob
//	group:app and not web3, (group:app or group:db) and fact:arch=amd64
type Target interface {
	Match(m MinionInfo) bool
	String() string
}

// ParseTarget parses a target expression.
func ParseTarget(s string) (Target, error) {
	toks := tokenize(s)
	if len(toks) == 0 {
		return nil, errors.New("empty target")
	}
	p := &tparser{toks: toks}
	t, err := p.or()
	if err != nil {
		return nil, fmt.Errorf("target %q: %w", s, err)
	}
	if p.i != len(p.toks) {
		return nil, fmt.Errorf("target %q: unexpected %q", s, p.toks[p.i])
	}
	return t, nil
}

// Resolve returns the ids, sorted, of the minions that t matches.
func Resolve(t Target, minions []MinionInfo) []string {
	var out []string
	for _, m := range minions {
		if safeMatch(t, m) {
			out = append(out, m.ID)
		}
	}
	sort.Strings(out)
	return out
}

// safeMatch is t.Match that takes a panic (on facts a minion reported) for no match.
func safeMatch(t Target, m MinionInfo) (ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	return t.Match(m)
}

func tokenize(s string) []string {
	var toks []string
	var cur strings.Builder
	flush := func() {
		if cur.Len() > 0 {
			toks = append(toks, cur.String())
			cur.Reset()
		}
	}
	for _, r := range s {
		switch {
		case r == '(' || r == ')':
			flush()
			toks = append(toks, string(r))
		case r == ' ' || r == '\t' || r == '\n':
			flush()
		default:
			cur.WriteRune(r)
		}
	}
	flush()
	return toks
}

type tparser struct {
	toks []string
	i    int
}

func (p *tparser) peek() string {
	if p.i < len(p.toks) {
		return p.toks[p.i]
	}
	return ""
}

func (p *tparser) or() (Target, error) {
	l, err := p.and()
	if err != nil {
		return nil, err
	}
	for p.peek() == "or" {
		p.i++
		r, err := p.and()
		if err != nil {
			return nil, err
		}
		l = binary{op: "or", l: l, r: r}
	}
	return l, nil
}

func (p *tparser) and() (Target, error) {
	l, err := p.not()
	if err != nil {
		return nil, err
	}
	for p.peek() == "and" {
		p.i++
		r, err := p.not()
		if err != nil {
			return nil, err
		}
		l = binary{op: "and", l: l, r: r}
	}
	return l, nil
}

func (p *tparser) not() (Target, error) {
	if p.peek() == "not" {
		p.i++
		t, err := p.not()
		if err != nil {
			return nil, err
		}
		return notT{t}, nil
	}
	return p.primary()
}

func (p *tparser) primary() (Target, error) {
	tok := p.peek()
	switch tok {
	case "":
		return nil, errors.New("expression ends too early")
	case "(":
		p.i++
		t, err := p.or()
		if err != nil {
			return nil, err
		}
		if p.peek() != ")" {
			return nil, errors.New("missing )")
		}
		p.i++
		return t, nil
	case ")", "and", "or":
		return nil, fmt.Errorf("unexpected %q", tok)
	}
	p.i++
	return term(tok)
}

func term(tok string) (Target, error) {
	if g, ok := strings.CutPrefix(tok, "group:"); ok {
		if err := checkGlob(g); err != nil {
			return nil, err
		}
		return groupT(g), nil
	}
	if f, ok := strings.CutPrefix(tok, "fact:"); ok {
		k, v, ok := strings.Cut(f, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%q: want fact:KEY=VALUE", tok)
		}
		if err := checkGlob(v); err != nil {
			return nil, err
		}
		return factT{key: k, glob: v}, nil
	}
	if kind, _, ok := strings.Cut(tok, ":"); ok {
		return nil, unknownKind(tok, kind)
	}
	globs := strings.Split(tok, ",")
	for _, g := range globs {
		if g == "" {
			return nil, fmt.Errorf("%q: empty name in list", tok)
		}
		if err := checkGlob(g); err != nil {
			return nil, err
		}
	}
	return idT(globs), nil
}

func checkGlob(g string) error {
	if _, err := path.Match(g, ""); err != nil {
		return fmt.Errorf("bad pattern %q", g)
	}
	return nil
}

type binary struct {
	op   string
	l, r Target
}

func (b binary) Match(m MinionInfo) bool {
	if b.op == "and" {
		return b.l.Match(m) && b.r.Match(m)
	}
	return b.l.Match(m) || b.r.Match(m)
}
func (b binary) String() string { return "(" + b.l.String() + " " + b.op + " " + b.r.String() + ")" }

type notT struct{ t Target }

func (n notT) Match(m MinionInfo) bool { return !n.t.Match(m) }
func (n notT) String() string          { return "not " + n.t.String() }

type idT []string

func (t idT) Match(m MinionInfo) bool {
	for _, g := range t {
		if ok, _ := path.Match(g, m.ID); ok {
			return true
		}
	}
	return false
}
func (t idT) String() string { return strings.Join(t, ",") }

type groupT string

func (t groupT) Match(m MinionInfo) bool {
	for _, g := range m.Groups {
		if ok, _ := path.Match(string(t), g); ok {
			return true
		}
	}
	return false
}
func (t groupT) String() string { return "group:" + string(t) }

type factT struct{ key, glob string }

func (t factT) Match(m MinionInfo) bool {
	var v any = m.Facts
	for _, part := range strings.Split(t.key, ".") {
		mm, ok := v.(map[string]any)
		if !ok {
			return false
		}
		if v, ok = mm[part]; !ok {
			return false
		}
	}
	return matchValue(t.glob, v)
}
func (t factT) String() string { return "fact:" + t.key + "=" + t.glob }

func matchValue(glob string, v any) bool {
	switch x := v.(type) {
	case nil:
		return false
	case []any:
		for _, e := range x {
			if matchValue(glob, e) {
				return true
			}
		}
		return false
	case map[string]any:
		return false
	default:
		ok, _ := path.Match(glob, fmt.Sprint(x))
		return ok
	}
}
