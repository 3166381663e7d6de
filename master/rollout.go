package master

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/brinecm/brine/internal/wire"
)

// batchSize turns "N" or "N%" into a number of minions out of total (at least 1).
func batchSize(batch string, total int) (int, error) {
	if pct, ok := strings.CutSuffix(batch, "%"); ok {
		p, err := strconv.ParseFloat(pct, 64)
		if err != nil || p <= 0 || p > 100 {
			return 0, fmt.Errorf("--batch %s: a percentage between 0 and 100, like 25%%", batch)
		}
		return max(1, int(math.Ceil(float64(total)*p/100))), nil
	}
	n, err := strconv.Atoi(batch)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("--batch %s: a number of minions (at least 1) or a percentage like 25%%", batch)
	}
	return n, nil
}

// PlanRollout splits the resolved minion set ids into the batches a rollout runs, canary first.
// canary is the resolved canary target; every canary minion must be part of ids.
func PlanRollout(ids, canary []string, batch string) ([][]string, error) {
	var out [][]string
	rest := ids
	if len(canary) > 0 {
		for _, c := range canary {
			if !slices.Contains(ids, c) {
				return nil, fmt.Errorf("canary minion %s is not in the target", c)
			}
		}
		out = append(out, canary)
		rest = slices.DeleteFunc(slices.Clone(ids), func(id string) bool { return slices.Contains(canary, id) })
	}
	if len(rest) == 0 {
		return out, nil
	}
	size := len(rest)
	if batch != "" {
		var err error
		// A percentage is of the whole target, so "25%" means the same batch size with or
		// without a canary.
		if size, err = batchSize(batch, len(ids)); err != nil {
			return nil, err
		}
	}
	for start := 0; start < len(rest); start += size {
		out = append(out, rest[start:min(start+size, len(rest))])
	}
	return out, nil
}

// RolloutResult is the outcome of a rollout: every return, who failed or did not return, and who
// was never touched because the rollout stopped.
type RolloutResult struct {
	Result
	Failed    []string
	Untouched []string
	Stopped   string // why the rollout stopped early, "" if it ran to the end
}

// RunRollout applies spec to spec.Minions batch by batch as ro says, emitting each batch's job
// events between "batch" and "batch_done" events, then "stopped" if it stopped early, then "done".
// spec.Minions must be the resolved target in a stable order.
func (m *Master) RunRollout(ctx context.Context, spec JobSpec, ro Rollout, emit func(Event)) (*RolloutResult, error) {
	// Parsed and packed once for every batch; a bundle that does not load is reported by the
	// first batch's Run, which loads it again.
	_ = spec.load()
	return m.rollout(ctx, spec.Minions, spec.Site, ro, emit, func(ctx context.Context, batch []string, emit func(Event)) (*Result, error) {
		bspec := spec
		bspec.Minions = batch
		return m.Run(ctx, bspec, emit)
	})
}

// batchRunner runs one batch of a rollout to its end, emitting its job events.
type batchRunner func(ctx context.Context, batch []string, emit func(Event)) (*Result, error)

// rollout runs ids batch by batch as ro says (see RunRollout). Without batches or a canary it is
// one batch with no batch events.
func (m *Master) rollout(ctx context.Context, ids []string, site *Site, ro Rollout, emit func(Event), run batchRunner) (*RolloutResult, error) {
	if emit == nil {
		emit = func(Event) {}
	}
	batchEvent := func(ev Event) {
		if ro.Enabled() {
			emit(ev)
		}
	}
	var canary []string
	if ro.Canary != "" {
		var err error
		if canary, err = m.ResolveTargetIn(ro.Canary, site); err != nil {
			return nil, fmt.Errorf("--canary: %w", err)
		}
		if len(canary) == 0 {
			return nil, fmt.Errorf("--canary %s matches no minion", ro.Canary)
		}
	}
	batches, err := PlanRollout(ids, canary, ro.Batch)
	if err != nil {
		return nil, err
	}
	res := &RolloutResult{Result: Result{Returns: map[string]wire.Return{}}}
	for i, batch := range batches {
		isCanary := i == 0 && len(canary) > 0
		batchEvent(Event{Event: "batch", Batch: i + 1, Batches: len(batches), Minions: batch, Canary: isCanary})
		// Each batch is a whole job; its own "done" is not the rollout's.
		r, err := run(ctx, batch, func(ev Event) {
			if ev.Event != "done" {
				emit(ev)
			}
		})
		if err != nil {
			// An invalid bundle is found in the first batch, before anything was sent.
			if errors.Is(err, ErrNoMinions) || i == 0 {
				return nil, err
			}
			res.Stopped = err.Error()
		}
		var failed []string
		if r != nil {
			res.JIDs = append(res.JIDs, r.JIDs...)
			for id, ret := range r.Returns {
				res.Returns[id] = ret
				if !ret.Success {
					failed = append(failed, id)
				}
			}
			res.Missing = append(res.Missing, r.Missing...)
			failed = append(failed, r.Missing...)
		}
		slices.Sort(failed)
		res.Failed = append(res.Failed, failed...)
		batchEvent(Event{Event: "batch_done", Batch: i + 1, Batches: len(batches), Minions: batch, Failed: failed, Canary: isCanary})
		switch {
		case res.Stopped != "":
		case ctx.Err() != nil:
			res.Stopped = "interrupted"
		case isCanary && len(failed) > 0:
			res.Stopped = fmt.Sprintf("the canary failed (%s)", strings.Join(failed, ", "))
		case len(res.Failed) > ro.MaxFailures:
			res.Stopped = fmt.Sprintf("%d minion(s) failed, more than --max-failures %d", len(res.Failed), ro.MaxFailures)
		}
		if res.Stopped != "" {
			for _, later := range batches[i+1:] {
				res.Untouched = append(res.Untouched, later...)
			}
			if i+1 < len(batches) {
				emit(Event{Event: "stopped", Batch: i + 1, Batches: len(batches), Error: res.Stopped, Untouched: res.Untouched, Failed: res.Failed})
			}
			break
		}
	}
	last := ""
	if len(res.JIDs) > 0 {
		last = res.JIDs[len(res.JIDs)-1]
	}
	emit(Event{Event: "done", JID: last, Missing: res.Missing, Failed: res.Failed, Untouched: res.Untouched})
	return res, nil
}
