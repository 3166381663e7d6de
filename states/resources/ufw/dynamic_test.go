package ufw

import (
	"strings"
	"testing"

	"github.com/brinecm/brine/states"
	"github.com/brinecm/brine/states/resources/restest"
)

// dynamic blocks expand before a type decodes them, so a role can add rules to a shared block.
func TestDynamicBlocksExpand(t *testing.T) {
	src := `
variable "roles" { type = list(string) }
ufw {
  rule "ssh" {
    port  = "22"
    proto = "tcp"
  }
  dynamic "rule" {
    for_each = contains(var.roles, "cache") ? { http = "8080", https = "8443" } : {}
    labels   = [rule.key]
    content {
      port  = rule.value
      proto = "tcp"
    }
  }
}`
	for _, tc := range []struct {
		roles string
		want  string
	}{{`["cache"]`, "22 8080 8443"}, {`["db"]`, "22"}} {
		b := &states.Bundle{Files: map[string][]byte{"main.hcl": []byte(src)}}
		g, diags := restest.Compile(b, testTypes, states.Options{Vars: map[string]string{"roles": tc.roles}})
		if diags.HasErrors() {
			t.Fatal(diags)
		}
		var ports []string
		for _, r := range g.Resources()[0].(*ufwRes).rules {
			ports = append(ports, r.port)
		}
		if got := strings.Join(ports, " "); got != tc.want {
			t.Errorf("roles %s: ports %q, want %q", tc.roles, got, tc.want)
		}
	}
}
