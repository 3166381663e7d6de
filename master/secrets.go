package master

import (
	"errors"
	"fmt"
	"os"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// Secret is one entry of the master's secrets file:
//
//	secret "db_password" {
//	  value  = "s3cret"
//	  target = "group:db or group:app" # optional: which minions may receive it; default all
//	}
//
// A job carries, for each targeted minion, only the secrets the bundle names and the minion may
// receive, sealed to that minion's key.
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
			if _, err := ParseTarget(s.Target); err != nil {
				return nil, fmt.Errorf("secret %q: %w", s.Name, err)
			}
		}
	}
	return sf.Secrets, nil
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
				t, err := ParseTarget(s.Target)
				if err != nil || !t.Match(m) {
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
