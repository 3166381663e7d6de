package states

import (
	"context"
	"fmt"
	"sort"
	"sync"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
)

// Resource is one managed thing on a host. The engine calls Check, then Apply only when Check
// reported a difference, then Check again: a resource whose re-check still differs has failed.
type Resource interface {
	// Check compares the host with the wanted state and returns a human-readable difference, empty
	// when there is nothing to do. It must not change the host. It may remember what it found for
	// the Apply that follows.
	Check(ctx context.Context, env *Env) (diff string, err error)
	// Apply makes the host match the wanted state. It is called only after a Check that returned a
	// non-empty diff. On ctx cancellation it stops as soon as it safely can and returns ctx.Err().
	Apply(ctx context.Context, env *Env) error
}

// Notifiable is implemented by resources that react to `notify` from another resource that
// changed (a service reloads or restarts, an exec runs). Notify is called at most once per run,
// after the resource's own Check/Apply.
type Notifiable interface {
	Resource
	Notify(ctx context.Context, env *Env) error
}

// Batcher is implemented by resources whose changes are cheaper applied together, like packages:
// every resource that is ready at the same time and has the same BatchKey is applied by one
// ApplyBatch call on the first of them. The returned slice has one error (or nil) per resource.
type Batcher interface {
	Resource
	BatchKey() string
	ApplyBatch(ctx context.Context, env *Env, batch []Resource) []error
}

// Env is the per-run context that resources share: the host they run on and run-scoped caches
// (so that, say, the dpkg database is read once per run and not once per package).
type Env struct {
	DryRun bool

	all []Resource // every resource of the run, in run order

	mu    sync.Mutex
	cache map[string]*cacheEntry // guarded by mu
}

type cacheEntry struct {
	mu  sync.Mutex // held while filling, so one key is filled once
	ok  bool       // guarded by mu
	val any        // guarded by mu
}

// Cached returns the run-scoped value under key, computing it with fill the first time. fill's
// error is not cached. Concurrent callers of one key wait for one fill; fill may itself call
// Cached for another key (only the key's own entry is locked while it runs).
func (e *Env) Cached(key string, fill func() (any, error)) (any, error) {
	e.mu.Lock()
	if e.cache == nil {
		e.cache = map[string]*cacheEntry{}
	}
	ent, ok := e.cache[key]
	if !ok {
		ent = &cacheEntry{}
		e.cache[key] = ent
	}
	e.mu.Unlock()
	ent.mu.Lock()
	defer ent.mu.Unlock()
	if ent.ok {
		return ent.val, nil
	}
	v, err := fill()
	if err != nil {
		return nil, err
	}
	ent.val, ent.ok = v, true
	return v, nil
}

// All returns every resource of this run, in run order, for types that prepare work for all of
// theirs at once (one apt-cache call for every package of the bundle).
func (e *Env) All() []Resource { return e.all }

// Forget drops a cached value, for resources whose apply changed what it describes.
func (e *Env) Forget(key string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.cache, key)
}

// DecodeRequest is what a resource type's decoder gets for one block.
type DecodeRequest struct {
	Name   string   // the block label, "" for unlabelled types
	Body   hcl.Body // the block body without the meta-arguments
	Ctx    *hcl.EvalContext
	Block  *hcl.Block
	Bundle *Bundle
	// OnlyIf is the value of a string `only_if` (a shell guard) for the types that take one.
	OnlyIf string

	sens *nodeSensitivity // which arguments received sensitive values; filled while Body decodes
}

// Sensitive reports whether argument name (inside a nested block: "block.name") received a
// value derived from secret() or a sensitive variable. It is known once the body is decoded.
// Types that set HidesSensitive use it to keep such values out of their diffs and errors.
func (r *DecodeRequest) Sensitive(name string) bool {
	return r.sens != nil && r.sens.attrs[name]
}

// NoteSensitive records a sensitive value that the type derived itself (a template it rendered
// that called secret()): argument name counts as sensitive and v's text is scrubbed from output.
// v may be unmarked.
func (r *DecodeRequest) NoteSensitive(name string, v cty.Value) {
	if r.sens != nil {
		r.sens.mark(name, v.Mark(sensitiveMark))
	}
}

// AttrRange is where attribute name's value stands in the block, or the block's header when the
// attribute is not set: the subject of a diagnostic about that attribute.
func (r *DecodeRequest) AttrRange(name string) *hcl.Range {
	if attrs, _ := r.Body.JustAttributes(); attrs != nil {
		if a, ok := attrs[name]; ok {
			return a.Expr.Range().Ptr()
		}
	}
	return r.Block.DefRange.Ptr()
}

// Type describes one resource type: its block name and how to decode a block into a Resource.
type Type struct {
	Name string
	// Labels is the number of block labels: 1 for most types (`file "/etc/motd" {}`), 0 for
	// singletons (`ufw {}`).
	Labels int
	// ShellGuards reports whether a string `only_if` is a shell command guard for this type.
	ShellGuards bool
	// HidesSensitive reports that Decode reads req.Sensitive and keeps sensitive values out of
	// the resource's diffs and errors itself (a file shows "(sensitive content)"). For other
	// types the engine hides the whole diff of a resource that received a sensitive value.
	HidesSensitive bool
	Decode         func(req *DecodeRequest) (Resource, hcl.Diagnostics)
	// Merge, when set, lets a singleton be declared in several blocks (several bundles of a
	// site each adding firewall rules): it combines their decoded resources, in declaration
	// order, into one, and reports a conflict between them as an error naming both blocks.
	// Without it a second block of the same address is a duplicate.
	Merge func(rs []Resource, blocks []*hcl.Block) (Resource, hcl.Diagnostics)
	// Facts, when set, returns what this type knows about the host for the minion's facts
	// (tinc_network: the public key of each network), merged into Facts.
	Facts func() map[string]any
}

// Registry is the set of resource types a bundle is loaded and compiled against. There is no
// global registration: the program builds one (states/resources/builtin.Types) and passes it to
// every function that reads a bundle, so what a bundle may declare is what its caller says.
type Registry struct {
	types map[string]*Type
	names []string // sorted
}

// NewRegistry returns a registry of ts. It panics on a duplicate name: that is a program error.
func NewRegistry(ts ...*Type) *Registry {
	r := &Registry{types: map[string]*Type{}}
	for _, t := range ts {
		if _, dup := r.types[t.Name]; dup {
			panic(fmt.Sprintf("states: resource type %q registered twice", t.Name))
		}
		r.types[t.Name] = t
		r.names = append(r.names, t.Name)
	}
	sort.Strings(r.names)
	return r
}

// Lookup returns the type named name, or nil.
func (r *Registry) Lookup(name string) *Type {
	if r == nil {
		return nil
	}
	return r.types[name]
}

// Names returns the type names, sorted.
func (r *Registry) Names() []string {
	if r == nil {
		return nil
	}
	return append([]string(nil), r.names...)
}
