package master

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclsyntax"

	"github.com/brinecm/brine/internal/hclfile"
	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/pki"
	"github.com/brinecm/brine/states"
)

// Secret is one entry of the master's secrets file:
//
//	secret "db_password" {
//	  value  = "s3cret"
//	  target = "group:db or group:app" # optional: which minions may receive it; default all
//	}
//
// A job carries, for each targeted minion, only the secrets the bundle names and the minion may
// receive, sealed to that minion's key. A secret's target uses only what the master decides
// (minion ids and the groups it granted), never facts: facts are what a minion claims about
// itself, and a compromised minion would claim fact:role=db to get the database password.
type Secret struct {
	Name   string `hcl:"name,label"`
	Value  string `hcl:"value"`
	Target string `hcl:"target,optional"`
}

type secretsFile struct {
	Secrets []Secret `hcl:"secret,block"`
}

// LoadSecrets reads the secrets file; a missing file means no secrets.
func LoadSecrets(path string) ([]Secret, error) {
	src, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if diags := states.CheckNesting(src, path); diags.HasErrors() {
		return nil, diags
	}
	f, diags := hclsyntax.ParseConfig(src, path, hcl.InitialPos)
	if diags.HasErrors() {
		return nil, diags
	}
	var sf secretsFile
	if diags := gohcl.DecodeBody(f.Body, nil, &sf); diags.HasErrors() {
		return nil, diags
	}
	for _, s := range sf.Secrets {
		if s.Target != "" {
			if _, err := secretTarget(s); err != nil {
				return nil, hclfile.Diagnose(path, "Invalid secrets file", hclfile.Field(err, "secret", s.Name, "target"))
			}
		}
	}
	return sf.Secrets, nil
}

// secretTarget parses a secret's target and refuses one that matches on facts.
func secretTarget(s Secret) (Target, error) {
	t, err := ParseTarget(s.Target)
	if err != nil {
		return nil, fmt.Errorf("secret %q: %w", s.Name, err)
	}
	if f := factTerm(t); f != "" {
		return nil, fmt.Errorf("secret %q: target %q uses %s: facts are claimed by the minion itself, so they cannot decide who receives a secret; use minion ids or group: (groups are granted by the master)", s.Name, s.Target, f)
	}
	return t, nil
}

// factTerm returns the first fact: term of t, or "".
func factTerm(t Target) string {
	switch x := t.(type) {
	case factT:
		return x.String()
	case notT:
		return factTerm(x.t)
	case binary:
		if f := factTerm(x.l); f != "" {
			return f
		}
		return factTerm(x.r)
	}
	return ""
}

// sealInputs seals, to each minion of meta, the secrets it may receive among names and the
// values of the job's sensitive variables (states.SealInputs), which go only to minions that
// spec selects without their facts.
func (m *Master) sealInputs(meta *wire.JobMeta, spec JobSpec, acc map[string]pki.MinionKey, names []string, sealedVars map[string]string) error {
	var all []Secret
	if len(names) > 0 {
		var err error
		if all, err = LoadSecrets(m.cfg.SecretsFile); err != nil {
			return fmt.Errorf("secrets file: %w", err)
		}
	}
	infos := map[string]MinionInfo{}
	for _, mi := range m.Minions() {
		infos[mi.ID] = mi
	}
	meta.Secrets = map[string][]byte{}
	for _, id := range meta.Minions {
		vals, err := secretsFor(all, names, infos[id])
		if err != nil {
			return fmt.Errorf("%w; nothing was sent", err)
		}
		if len(sealedVars) > 0 && !spec.selectedWithoutFacts(id, acc[id].Groups) {
			return fmt.Errorf("sensitive variable %s would reach minion %s, which this job's target or its site's groups select by its facts, and facts are claimed by the minion: select the minions that receive sensitive values by id or key group; nothing was sent",
				strings.Join(sensitiveNames(sealedVars), ", "), id)
		}
		for k, v := range sealedVars {
			vals[k] = v
		}
		raw, _ := json.Marshal(vals)
		meta.Secrets[id] = m.key.SealTo(acc[id].Key.Box, raw)
	}
	return nil
}

// secretsFor returns the values of names that minion m may receive, or an error naming the first
// one it may not.
func secretsFor(all []Secret, names []string, m MinionInfo) (map[string]string, error) {
	out := map[string]string{}
	for _, n := range names {
		found := false
		for _, s := range all {
			if s.Name != n {
				continue
			}
			if s.Target != "" {
				t, err := secretTarget(s)
				// Matched without facts: even if a fact: term slipped through, it matches nothing.
				if err != nil || !t.Match(MinionInfo{ID: m.ID, Groups: m.Groups}) {
					continue
				}
			}
			out[n], found = s.Value, true
			break
		}
		if !found {
			return nil, fmt.Errorf("secret %q is not available to minion %s (see the master's secrets file)", n, m.ID)
		}
	}
	return out, nil
}

// claimants splits spec's minions: those kept, and those left out because spec selects them only
// by their facts and they may not receive its secrets (names) or the values of its sensitive
// variables. A minion the job selects without its facts is kept even if it may not receive them:
// the job is then refused (sealInputs), as the operator named it.
func (m *Master) claimants(spec JobSpec, names []string) (keep, out []string, err error) {
	var sealed map[string]string
	if spec.loaded != nil {
		_, _, sealed = states.SealInputs(spec.loaded.mod, spec.Vars, spec.VarFiles)
	}
	if len(names) == 0 && len(sealed) == 0 {
		return spec.Minions, nil, nil
	}
	var all []Secret
	if len(names) > 0 {
		if all, err = LoadSecrets(m.cfg.SecretsFile); err != nil {
			return nil, nil, fmt.Errorf("secrets file: %w", err)
		}
	}
	acc := m.keys.Accepted()
	for _, id := range spec.Minions {
		groups := acc[id].Groups
		if !spec.selectedWithoutFacts(id, groups) {
			if _, err := secretsFor(all, names, MinionInfo{ID: id, Groups: groups}); err != nil || len(sealed) > 0 {
				out = append(out, id)
				continue
			}
		}
		keep = append(keep, id)
	}
	return keep, out, nil
}

// selectedWithoutFacts says whether spec takes minion id (key groups keyGroups) when its facts
// are left out: its target, the site groups the target sees, and, for a converge, the bundle set
// the site assigns it. Facts are claims: what is sealed to every minion of a job (sensitive
// variables) must not go to a minion that chose to be selected (DESIGN.md invariant 20).
func (spec JobSpec) selectedWithoutFacts(id string, keyGroups []string) bool {
	mi := MinionInfo{ID: id, Groups: spec.Site.GroupsOf(MinionInfo{ID: id, Groups: keyGroups})}
	if spec.Target != "" {
		t, err := ParseTarget(spec.Target)
		if err != nil || !safeMatch(t, mi) {
			return false
		}
	}
	if spec.History == historyConverge && spec.Site != nil && strings.Join(spec.Site.BundlesOf(mi), ",") != spec.BundleName {
		return false
	}
	return true
}

// sensitiveNames returns the variable names (or var files) of sealed (states.SealInputs: each
// key a prefix ending in ':' and the name), quoted and sorted.
func sensitiveNames(sealed map[string]string) []string {
	var out []string
	for k := range sealed {
		out = append(out, strconv.Quote(k[strings.IndexByte(k, ':')+1:]))
	}
	sort.Strings(out)
	return out
}
