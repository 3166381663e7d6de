package states

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// Run plans (dryRun) or applies a compiled graph. Resources run in dependency order; the
// dependents of a failed resource are skipped with the reason; a resource notified by a changed
// source reacts once, after its own check and apply. In a plan nothing on the host changes.
func Run(ctx context.Context, g *Graph, dryRun bool) *Report {
	start := time.Now()
	env := &Env{DryRun: dryRun}
	for _, n := range g.nodes {
		env.all = append(env.all, n.res)
	}
	rep := &Report{DryRun: dryRun}
	st := map[string]*runState{}
	for _, n := range g.nodes {
		st[n.addr] = &runState{}
	}
	done := map[string]bool{}
	var texts textBudget
	pending := append([]*node(nil), g.nodes...)
	for len(pending) > 0 {
		// The first pending node whose dependencies are done runs next; batchable resources that
		// are ready at the same time join it in one batch.
		i := firstReady(pending, done)
		n := pending[i]
		batch := []*node{n}
		if b, ok := n.res.(Batcher); ok && n.guard {
			for _, m := range pending[i+1:] {
				if mb, ok := m.res.(Batcher); ok && m.guard && mb.BatchKey() == b.BatchKey() && ready(m, done) && skipReason(m, st) == "" {
					batch = append(batch, m)
				}
			}
		}
		results := runBatch(ctx, env, batch, st, dryRun)
		for k, m := range batch {
			done[m.addr] = true
			r := results[k]
			r.Address, r.Type, r.Name = m.addr, m.typ.Name, m.name
			r = redact(r, m, g.sensitive)
			r.Diff, r.Error = texts.cut(r.Diff), texts.cut(r.Error)
			rep.Results = append(rep.Results, r)
			pending = removeNode(pending, m)
		}
	}
	rep.Duration = time.Since(start)
	return rep
}

type runState struct {
	status   Status
	failSkip bool     // skipped because something it depends on failed
	notified []string // sources that changed and notify this resource
}

func ready(n *node, done map[string]bool) bool {
	for _, e := range n.deps {
		if !done[e.to] {
			return false
		}
	}
	return true
}

func firstReady(pending []*node, done map[string]bool) int {
	for i, n := range pending {
		if ready(n, done) {
			return i
		}
	}
	return 0 // unreachable: the graph is acyclic and pending is in topological order
}

func removeNode(ns []*node, n *node) []*node {
	for i, m := range ns {
		if m == n {
			return append(ns[:i], ns[i+1:]...)
		}
	}
	return ns
}

// skipReason says why n must not run because of a dependency, or "".
func skipReason(n *node, st map[string]*runState) string {
	for _, e := range n.deps {
		switch st[e.to].status {
		case StatusFailed:
			return fmt.Sprintf("dependency %s failed", e.to)
		case StatusSkipped:
			if st[e.to].failSkip {
				return fmt.Sprintf("dependency %s was skipped", e.to)
			}
		}
	}
	return ""
}

func runBatch(ctx context.Context, env *Env, batch []*node, st map[string]*runState, dryRun bool) []Result {
	results := make([]Result, len(batch))
	starts := make([]time.Time, len(batch))
	var toApply []int
	for k, n := range batch {
		starts[k] = time.Now()
		r := &results[k]
		if why := skipReason(n, st); why != "" {
			r.Status, r.Error = StatusSkipped, why
			st[n.addr].status, st[n.addr].failSkip = StatusSkipped, true
			continue
		}
		if !n.guard {
			r.Status, r.Error = StatusSkipped, n.reason
			st[n.addr].status = StatusSkipped
			continue
		}
		if err := ctx.Err(); err != nil {
			r.Status, r.Error = StatusFailed, "not run: "+err.Error()
			st[n.addr].status = StatusFailed
			continue
		}
		diff, err := n.res.Check(ctx, env)
		if err != nil {
			r.Status, r.Error = StatusFailed, "check: "+err.Error()
			st[n.addr].status = StatusFailed
			continue
		}
		r.Diff = diff
		if diff == "" {
			r.Status = StatusOK
			continue
		}
		r.Status = StatusChanged
		if !dryRun {
			toApply = append(toApply, k)
		}
	}
	if len(toApply) > 0 {
		var errs []error
		if b, ok := batch[toApply[0]].res.(Batcher); ok && len(toApply) > 1 {
			items := make([]Resource, len(toApply))
			for j, k := range toApply {
				items[j] = batch[k].res
			}
			errs = b.ApplyBatch(ctx, env, items)
		} else {
			for _, k := range toApply {
				errs = append(errs, batch[k].res.Apply(ctx, env))
			}
		}
		for j, k := range toApply {
			r := &results[k]
			if errs[j] != nil {
				r.Status, r.Error = StatusFailed, errs[j].Error()
				continue
			}
			// The re-check: an apply that did not converge is a failure, not a change.
			after, err := batch[k].res.Check(ctx, env)
			switch {
			case err != nil:
				r.Status, r.Error = StatusFailed, "re-check after apply: "+err.Error()
			case after != "":
				r.Status, r.Error = StatusFailed, "still differs after apply:\n"+after
			}
		}
	}
	for k, n := range batch {
		r := &results[k]
		s := st[n.addr]
		if r.Status == StatusOK || r.Status == StatusChanged {
			s.status = r.Status
			if nr, ok := n.res.(Notifiable); ok && len(s.notified) > 0 {
				r.Notified = true
				if dryRun {
					r.Diff = joinDiff(r.Diff, "would react to notify from "+strings.Join(s.notified, ", "))
				} else if err := nr.Notify(ctx, env); err != nil {
					r.Status, r.Error = StatusFailed, fmt.Sprintf("notify from %s: %v", strings.Join(s.notified, ", "), err)
				} else {
					r.Diff = joinDiff(r.Diff, "notified by "+strings.Join(s.notified, ", "))
				}
				if r.Status == StatusOK {
					r.Status = StatusChanged
				}
			}
		}
		if r.Status != StatusSkipped {
			s.status = r.Status
		}
		if r.Status == StatusChanged {
			for _, t := range n.notifies {
				st[t].notified = append(st[t].notified, n.addr)
			}
		}
		r.Duration = time.Since(starts[k])
	}
	return results
}

func joinDiff(a, b string) string {
	if a == "" {
		return b
	}
	return a + "\n" + b
}

// redact keeps sensitive values out of a result, which travels to the master, its job store and
// the operator's terminal. A resource that received a sensitive value and whose type does not
// hide such values itself gets its whole diff hidden; then every clear text of a sensitive
// value seen while compiling is replaced in the diff and the error (the second line of
// defence: a command's output can echo its sensitive argument, which no mark follows).
func redact(r Result, n *node, texts []string) Result {
	if n.sens != nil && len(n.sens.attrs) > 0 && !n.typ.HidesSensitive && r.Diff != "" {
		r.Diff = fmt.Sprintf("(sensitive: the difference is hidden because %s %s sensitive)",
			strings.Join(n.sens.names(), ", "), map[bool]string{true: "is", false: "are"}[len(n.sens.attrs) == 1])
	}
	r.Diff = scrub(r.Diff, texts)
	r.Error = scrub(r.Error, texts)
	return r
}
