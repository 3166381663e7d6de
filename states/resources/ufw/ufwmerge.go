package ufw

import (
	"fmt"
	"slices"
	"strings"

	"github.com/brinecm/brine/states"
	"github.com/hashicorp/hcl/v2"
)

// mergeUfw combines several ufw blocks (of the bundles of a site, or the files of one bundle)
// into the one ufw configuration of the host, so that bundles add rules side by side instead of
// each replacing the others' on every apply. Rules keep their order of declaration (bundle, then
// file, then block). A setting (a default policy, logging, enabled) given by two blocks must
// agree; two rules of the same name must be the same rule; a rule declared twice under two
// names is kept once. allow_lockout holds if any block sets it.
func mergeUfw(rs []states.Resource, blocks []*hcl.Block) (states.Resource, hcl.Diagnostics) {
	for _, r := range rs {
		if f, ok := r.(*states.Faulty); ok {
			return f, nil // a bad value from data fails the whole firewall on this host
		}
	}
	var diags hcl.Diagnostics
	conflict := func(what, a, b string, ra, rb hcl.Range) {
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Conflicting ufw blocks",
			Detail:  fmt.Sprintf("%s is %s here and %s at %s; ufw blocks merge into one firewall, so they must agree.", what, b, a, ra),
			Subject: rb.Ptr()})
	}
	out := &ufwRes{defaults: map[string]string{}}
	from := map[string]hcl.Range{} // setting -> block that set it
	byName := map[string]ufwRule{}
	byArgs := map[string]bool{}
	for i, r := range rs {
		u, ok := r.(*ufwRes)
		if !ok {
			return r, nil
		}
		rng := blocks[i].DefRange
		set := func(key, have, want string, assign func()) {
			if want == "" {
				return
			}
			if have != "" && have != want {
				conflict(key, have, want, from[key], rng)
				return
			}
			from[key] = rng
			assign()
		}
		for _, dir := range []string{"incoming", "outgoing", "routed"} {
			if v, ok := u.defaults[dir]; ok {
				set("default_"+dir, out.defaults[dir], v, func() { out.defaults[dir] = v })
			}
		}
		set("logging", out.logging, u.logging, func() { out.logging = u.logging })
		if u.enabled != nil {
			have := ""
			if out.enabled != nil {
				have = fmt.Sprint(*out.enabled)
			}
			set("enabled", have, fmt.Sprint(*u.enabled), func() { out.enabled = u.enabled })
		}
		out.allowLockout = out.allowLockout || u.allowLockout
		for _, rule := range u.rules {
			args := strings.Join(rule.args(), "\x00")
			if prev, dup := byName[rule.name]; dup {
				if strings.Join(prev.args(), "\x00") != args {
					diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Conflicting ufw rules",
						Detail:  fmt.Sprintf("A different rule named %q is declared at %s; rename one of them.", rule.name, prev.rng),
						Subject: rule.rng.Ptr()})
				}
				continue
			}
			byName[rule.name] = rule
			if byArgs[args] {
				continue // the same rule from another bundle: ufw holds it once
			}
			byArgs[args] = true
			out.rules = append(out.rules, rule)
		}
	}
	out.rules = slices.Clip(out.rules)
	return out, diags
}
