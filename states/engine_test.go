package states

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
)

// probe is a test-only resource type: it records every call in a shared journal, differs until
// applied (unless in_sync), and fails its apply on demand. It lets the engine's ordering,
// skipping, batching and notify rules be tested without touching the host.
type probe struct {
	name    string
	note    string
	fail    bool
	inSync  bool
	applied bool
	batch   string
}

var (
	journalMu sync.Mutex
	journal   []string
)

func record(s string) {
	journalMu.Lock()
	defer journalMu.Unlock()
	journal = append(journal, s)
}

func takeJournal() []string {
	journalMu.Lock()
	defer journalMu.Unlock()
	j := journal
	journal = nil
	return j
}

// probeTypes is the registry of the engine tests: probe, and single, a type of one block per host.
var probeTypes = NewRegistry(&Type{Name: "single", Labels: 0, Decode: func(req *DecodeRequest) (Resource, hcl.Diagnostics) {
	return &probe{name: "single"}, nil
}}, &Type{Name: "probe", Labels: 1, Decode: func(req *DecodeRequest) (Resource, hcl.Diagnostics) {
	var cfg struct {
		Fail   bool   `hcl:"fail,optional"`
		InSync bool   `hcl:"in_sync,optional"`
		Batch  string `hcl:"batch,optional"`
		Note   string `hcl:"note,optional"`
	}
	diags := gohcl.DecodeBody(req.Body, req.Ctx, &cfg)
	return &probe{name: req.Name, note: cfg.Note, fail: cfg.Fail, inSync: cfg.InSync, batch: cfg.Batch}, diags
}})

func (p *probe) Check(ctx context.Context, env *Env) (string, error) {
	if p.inSync || p.applied {
		return "", nil
	}
	return "+ " + p.name, nil
}

func (p *probe) Apply(ctx context.Context, env *Env) error {
	record("apply " + p.name)
	if p.fail {
		return errors.New("probe failed on purpose")
	}
	p.applied = true
	return nil
}

func (p *probe) Notify(ctx context.Context, env *Env) error {
	record("notify " + p.name)
	return nil
}

type batchedProbe struct{ *probe }

func (p *probe) asBatcher() Resource {
	if p.batch == "" {
		return p
	}
	return batchedProbe{p}
}

func (b batchedProbe) BatchKey() string { return b.batch }
func (b batchedProbe) ApplyBatch(ctx context.Context, env *Env, items []Resource) []error {
	var names []string
	errs := make([]error, len(items))
	for _, it := range items {
		p := it.(batchedProbe)
		names = append(names, p.name)
		p.applied = true
	}
	record("batch " + strings.Join(names, ","))
	return errs
}

func compileString(t *testing.T, src string, opts Options) *Graph {
	t.Helper()
	b := &Bundle{Files: map[string][]byte{"main.hcl": []byte(src)}}
	g, diags := compileBundle(b, probeTypes, opts)
	if diags.HasErrors() {
		var sb strings.Builder
		WriteDiagnostics(&sb, b, diags, false)
		t.Fatalf("compile: %s", sb.String())
	}
	return g
}

func statuses(r *Report) map[string]Status {
	m := map[string]Status{}
	for _, res := range r.Results {
		m[res.Address] = res.Status
	}
	return m
}

func TestOrderFollowsDependenciesNotDeclaration(t *testing.T) {
	takeJournal()
	g := compileString(t, `
probe "c" { depends_on = [probe.b] }
probe "b" { note = probe.a.name }
probe "a" {}
`, Options{})
	if got := strings.Join(g.Addresses(), " "); got != "probe.a probe.b probe.c" {
		t.Fatalf("order %q", got)
	}
	rep := Run(context.Background(), g, false)
	if got := strings.Join(takeJournal(), ";"); got != "apply a;apply b;apply c" {
		t.Fatalf("journal %q", got)
	}
	if c := rep.Counts(); c[StatusChanged] != 3 {
		t.Fatalf("counts %v", c)
	}
}

func TestFailureSkipsDependentsOnly(t *testing.T) {
	takeJournal()
	g := compileString(t, `
probe "base" { fail = true }
probe "child" { depends_on = [probe.base] }
probe "grandchild" { depends_on = [probe.child] }
probe "other" {}
`, Options{})
	rep := Run(context.Background(), g, false)
	st := statuses(rep)
	if st["probe.base"] != StatusFailed || st["probe.child"] != StatusSkipped || st["probe.grandchild"] != StatusSkipped || st["probe.other"] != StatusChanged {
		t.Fatalf("statuses %v", st)
	}
	for _, r := range rep.Results {
		if r.Address == "probe.child" && !strings.Contains(r.Error, "probe.base failed") {
			t.Fatalf("skip reason %q does not name the failed dependency", r.Error)
		}
	}
	if !rep.Failed() {
		t.Fatal("report not failed")
	}
}

func TestNotifyRunsOnceAfterSourcesChanged(t *testing.T) {
	takeJournal()
	g := compileString(t, `
probe "conf1" { notify = [probe.svc] }
probe "conf2" { notify = [probe.svc] }
probe "conf3" {
  in_sync = true
  notify  = [probe.svc2]
}
probe "svc" { in_sync = true }
probe "svc2" { in_sync = true }
`, Options{})
	rep := Run(context.Background(), g, false)
	j := strings.Join(takeJournal(), ";")
	if strings.Count(j, "notify svc") != 1 || strings.Contains(j, "notify svc2") {
		t.Fatalf("journal %q", j)
	}
	if strings.Index(j, "notify svc") < strings.Index(j, "apply conf2") {
		t.Fatalf("notified before all sources ran: %q", j)
	}
	st := statuses(rep)
	if st["probe.svc"] != StatusChanged || st["probe.svc2"] != StatusOK {
		t.Fatalf("statuses %v", st)
	}
}

func TestPlanChangesNothing(t *testing.T) {
	takeJournal()
	g := compileString(t, `
probe "a" { notify = [probe.b] }
probe "b" {}
`, Options{})
	rep := Run(context.Background(), g, true)
	if j := takeJournal(); len(j) != 0 {
		t.Fatalf("a plan applied or notified: %v", j)
	}
	if c := rep.Counts(); c[StatusChanged] != 2 || !rep.DryRun {
		t.Fatalf("counts %v", c)
	}
}

func TestOnlyIfFalseSkipsWithoutFailingDependents(t *testing.T) {
	takeJournal()
	g := compileString(t, `
variable "on" {
  type    = bool
  default = false
}
probe "guarded" { only_if = var.on }
probe "after" { depends_on = [probe.guarded] }
`, Options{})
	rep := Run(context.Background(), g, false)
	st := statuses(rep)
	if st["probe.guarded"] != StatusSkipped || st["probe.after"] != StatusChanged || rep.Failed() {
		t.Fatalf("statuses %v", st)
	}
}

func TestVariablesFromFlagsAndFiles(t *testing.T) {
	src := `
variable "ports" { type = list(number) }
variable "name" {
  type    = string
  default = "x"
}
probe "p" { note = "${var.name}:${join(",", var.ports)}" }
`
	b := &Bundle{Files: map[string][]byte{"main.hcl": []byte(src)}}
	_, diags := compileBundle(b, probeTypes, Options{Vars: map[string]string{"ports": "[22, 80]"}, VarFiles: map[string][]byte{"f.hcl": []byte(`name = "web"`)}})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	_, diags = compileBundle(b, probeTypes, Options{Vars: map[string]string{"ports": "[22, 80]", "nmae": "x"}})
	if !diags.HasErrors() || !strings.Contains(diags.Error(), `Did you mean "name"?`) {
		t.Fatalf("undeclared --var not reported with a suggestion: %v", diags)
	}
	_, diags = compileBundle(b, probeTypes, Options{Vars: map[string]string{"ports": "twenty"}})
	if !diags.HasErrors() {
		t.Fatal("a non-list value for a list variable was accepted")
	}
}

func TestPeerTargetsAndSecretNames(t *testing.T) {
	b := &Bundle{Files: map[string][]byte{"main.hcl": []byte(`
probe "p" { note = jsonencode([peers("group:app"), peers("group:db"), peers("group:app"), secret("k")]) }
`)}}
	m, diags := Load(b, probeTypes)
	if diags.HasErrors() || len(m.CallDiags) > 0 || strings.Join(m.PeerTargets, ",") != "group:app,group:db" {
		t.Fatalf("targets %v %v %v", m.PeerTargets, diags, m.CallDiags)
	}
	if names := m.SecretNames; strings.Join(names, ",") != "k" {
		t.Fatalf("secret names %v", names)
	}
	g := compileString(t, string(b.Files["main.hcl"]), Options{
		Peers:   map[string][]map[string]any{"group:app": {{"id": "app1", "ipv4": []string{"10.0.0.2"}}}},
		Secrets: map[string]string{"k": "v"},
	})
	if g.Len() != 1 {
		t.Fatal("graph")
	}
}

func TestBatchersShareOneApply(t *testing.T) {
	takeJournal()
	// Wrap probes with a batch key so the engine sees Batchers.
	b := &Bundle{Files: map[string][]byte{"main.hcl": []byte(`
probe "x" { batch = "k" }
probe "y" { batch = "k" }
probe "z" {
  batch      = "k"
  depends_on = [probe.w]
}
probe "w" {}
`)}}
	g, diags := compileBundle(b, probeTypes, Options{})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	for _, n := range g.nodes {
		n.res = n.res.(*probe).asBatcher()
	}
	Run(context.Background(), g, false)
	j := strings.Join(takeJournal(), ";")
	if !strings.Contains(j, "batch x,y") {
		t.Fatalf("x and y were not applied in one batch: %q", j)
	}
}

func TestLocals(t *testing.T) {
	src := `
variable "prefix" { default = "10.8.0" }
locals {
  last = split(".", minion.facts.addr)[3]
}
locals {
  mesh = "${var.prefix}.${local.last}"
  cidr = "${local.mesh}/24"
}
probe "p" { note = local.cidr }
`
	b := &Bundle{Files: map[string][]byte{"main.hcl": []byte(src)}}
	g, diags := compileBundle(b, probeTypes, Options{Minion: Minion{ID: "a", Facts: map[string]any{"addr": "192.0.2.7"}}})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if note := g.nodes[0].res.(*probe).note; note != "10.8.0.7/24" {
		t.Fatalf("local value %q", note)
	}
	b.Files["main.hcl"] = []byte(`
locals {
  a = local.b
  b = local.a
}`)
	if _, diags := compileBundle(b, probeTypes, Options{}); !diags.HasErrors() || !strings.Contains(diags.Error(), "refer to each other") {
		t.Fatalf("a cycle among locals: %v", diags)
	}
}

func TestEnvCachedFillsOnceAndMayNest(t *testing.T) {
	env := &Env{}
	fills := 0
	outer, err := env.Cached("outer", func() (any, error) {
		fills++
		inner, err := env.Cached("inner", func() (any, error) { return 2, nil }) // nested: no deadlock
		if err != nil {
			return nil, err
		}
		return inner.(int) + 1, nil
	})
	if err != nil || outer.(int) != 3 {
		t.Fatalf("outer %v %v", outer, err)
	}
	again, _ := env.Cached("outer", func() (any, error) { fills++; return 0, nil })
	if again.(int) != 3 || fills != 1 {
		t.Fatalf("filled %d times, got %v", fills, again)
	}
	if _, err := env.Cached("flaky", func() (any, error) { return nil, errors.New("no") }); err == nil {
		t.Fatal("error lost")
	}
	if v, err := env.Cached("flaky", func() (any, error) { return "yes", nil }); err != nil || v != "yes" {
		t.Fatalf("an error was cached: %v %v", v, err)
	}
	env.Forget("outer")
	if v, _ := env.Cached("outer", func() (any, error) { return 9, nil }); v.(int) != 9 {
		t.Fatal("Forget did not forget")
	}
}

func TestForEach(t *testing.T) {
	takeJournal()
	g := compileString(t, `
variable "sites" { default = ["blog1", "blog2"] }
probe "site" {
  for_each = toset(var.sites)
  note     = "site ${each.key}"
  notify   = [probe.reload]
}
probe "port" {
  for_each = { web = 80, tls = 443 }
  note     = "${each.key}=${each.value}"
}
probe "after" { depends_on = [probe.site, probe.port] }
probe "reload" { in_sync = true }
`, Options{})
	got := strings.Join(g.Addresses(), " ")
	if got != "probe.blog1 probe.blog2 probe.tls probe.web probe.after probe.reload" {
		t.Fatalf("order %q", got)
	}
	notes := map[string]string{}
	for _, n := range g.nodes {
		notes[n.addr] = n.res.(*probe).note
	}
	if notes["probe.blog2"] != "site blog2" || notes["probe.tls"] != "tls=443" {
		t.Fatalf("notes %v", notes)
	}
	rep := Run(context.Background(), g, false)
	j := strings.Join(takeJournal(), ";")
	if strings.Count(j, "notify reload") != 1 || strings.Index(j, "apply after") < strings.Index(j, "apply web") {
		t.Fatalf("journal %q", j)
	}
	if rep.Failed() {
		t.Fatal(rep.Results)
	}
	for _, bad := range []struct{ src, want string }{
		{`probe "x" { for_each = "one" }`, "map, set or list"},
		{`probe "x" { for_each = ["a", "a"] }`, "appears twice"},
		{"probe \"y\" {}\nprobe \"x\" { for_each = [probe.y.name] }", "cannot refer to resources"},
		{"probe \"a\" {}\nprobe \"x\" { for_each = [\"a\"] }", "Duplicate resource"},
		{`single { for_each = ["a"] }`, "takes no for_each"},
	} {
		b := &Bundle{Files: map[string][]byte{"main.hcl": []byte(bad.src)}}
		if _, diags := compileBundle(b, probeTypes, Options{}); !diags.HasErrors() || !strings.Contains(diags.Error(), bad.want) {
			t.Errorf("%s: want %q, got %v", bad.src, bad.want, diags)
		}
	}
	// Check (no minion) keeps a for_each block as one node and still resolves edges to it.
	b := &Bundle{Files: map[string][]byte{"main.hcl": []byte(`
probe "site" { for_each = toset(minion.facts.sites) }
probe "after" { depends_on = [probe.site] }
`)}}
	if diags := checkBundle(b, probeTypes, Options{}); diags.HasErrors() {
		t.Fatalf("Check: %v", diags)
	}
}

// compileBundle loads b against types and compiles it: Load and Compile as a minion runs them.
func compileBundle(b *Bundle, types *Registry, opts Options) (*Graph, hcl.Diagnostics) {
	m, diags := Load(b, types)
	if diags.HasErrors() {
		return nil, diags
	}
	g, d := Compile(m, opts)
	return g, append(diags, d...)
}

// checkBundle loads b against types and checks it, as the CLI does before it sends a bundle.
func checkBundle(b *Bundle, types *Registry, opts Options) hcl.Diagnostics {
	m, diags := Load(b, types)
	if diags.HasErrors() {
		return diags
	}
	return append(diags, Check(m, opts)...)
}
