package states

import (
	"strconv"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

// dynamicTypes: holder, one block per host whose nested rule blocks (from dynamic blocks) it
// counts, and the engine tests' probe, a labelled type for for_each.
var dynamicTypes = NewRegistry(&Type{Name: "holder", Labels: 0, Decode: func(req *DecodeRequest) (Resource, hcl.Diagnostics) {
	content, diags := req.Body.Content(&hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{{Type: "rule", LabelNames: []string{"name"}}}})
	n := 0
	if content != nil {
		n = len(content.Blocks)
	}
	return &probe{name: strconv.Itoa(n)}, diags
}}, probeTypes.Lookup("probe"))

// What dynamic blocks make counts in MaxResources, with for_each instances, before anything is
// expanded: nested dynamic blocks (whose for_each reads the outer iterator) are counted
// element by element and refused as soon as the total passes the bound.
func TestDynamicBlocksCountInMaxResources(t *testing.T) {
	for _, tc := range []struct {
		name, src, want string
	}{
		{"flat", `holder {
  dynamic "rule" {
    for_each = flatten([for a in range(11) : [for b in range(1000) : "${a}-${b}"]])
    labels   = [rule.value]
    content {
      port  = "22"
      proto = "tcp"
    }
  }
}`, "main.hcl:3,"},
		{"nested, reading the outer iterator", `holder {
  dynamic "rule" {
    for_each = range(200)
    iterator = outer
    labels   = ["r${outer.key}"]
    content {
      port = "22"
      dynamic "extra" {
        for_each = range(outer.value)
        content {}
      }
    }
  }
}`, "main.hcl:9,"},
		{"with for_each instances", `probe "p" {
  for_each = toset([for i in range(1000) : "p${i}"])
}
holder {
  dynamic "rule" {
    for_each = flatten([for a in range(10) : [for b in range(901) : "${a}-${b}"]])
    labels   = [rule.value]
    content {
      port  = "22"
      proto = "tcp"
    }
  }
}`, "main.hcl:6,"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &Bundle{Files: map[string][]byte{"main.hcl": []byte(tc.src)}}
			m, d := Load(b, dynamicTypes)
			if !d.HasErrors() {
				_, d = Compile(m, Options{Minion: Minion{ID: "m1"}})
			}
			if !d.HasErrors() || !strings.Contains(d.Error(), "Too many resources") || !strings.Contains(d.Error(), tc.want) {
				t.Fatalf("got %v", d)
			}
		})
	}
	// Under the bound, the same shapes compile.
	ok := `holder {
  dynamic "rule" {
    for_each = range(100)
    labels   = ["r${rule.key}"]
    content {
      port  = "${rule.value + 1000}"
      proto = "tcp"
    }
  }
}`
	b := &Bundle{Files: map[string][]byte{"main.hcl": []byte(ok)}}
	m, d := Load(b, dynamicTypes)
	if d.HasErrors() {
		t.Fatal(d)
	}
	g, d := Compile(m, Options{Minion: Minion{ID: "m1"}})
	if d.HasErrors() || g.nodes[0].res.(*probe).name != "100" {
		t.Fatalf("100 dynamic rules: %v", d)
	}
}
