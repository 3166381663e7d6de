package minion

import (
	"encoding/json"
	"time"

	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/states"
)

// logJob logs one job the minion ran: its id, kind, bundle digest, outcome and duration, and for
// an apply the count of changed and failed resources (a dry run's changes are differences found).
func (e *executor) logJob(j job, ret wire.Return) {
	outcome := "succeeded"
	if !ret.Success {
		outcome = "failed"
	}
	attrs := []any{"jid", j.meta.JID, "kind", j.meta.Kind, "outcome", outcome,
		"duration", ret.Finished.Sub(ret.Started).Round(time.Microsecond)}
	if j.meta.BundleDigest != "" {
		attrs = append(attrs, "bundle_digest", j.meta.BundleDigest)
	}
	if j.meta.DryRun {
		attrs = append(attrs, "dry_run", true)
	}
	var rep states.Report
	if len(ret.Report) > 0 && json.Unmarshal(ret.Report, &rep) == nil && j.meta.Kind == wire.JobApply {
		c := rep.Counts()
		attrs = append(attrs, "changed", c[states.StatusChanged], "failed_resources", c[states.StatusFailed])
	}
	if ret.Error != "" {
		attrs = append(attrs, "err", ret.Error)
	}
	e.log.Info("ran a job", attrs...)
}
