package minion

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/brinecm/brine/capture"
	"github.com/brinecm/brine/internal/wire"
)

// captureJob captures this host as a bundle (as `brine local capture` does) and returns its
// files and summary. The capture stops at the job's expiry; a capture whose files exceed
// wire.MaxCaptureFiles bytes fails instead of sending them. Private keys are never in it
// (capture makes them secret() references and checks every file for a key block).
func (e *executor) captureJob(ctx context.Context, j job, ret wire.Return) wire.Return {
	defer func() { ret.Finished = time.Now().UTC() }()
	spec := j.meta.Capture
	if spec == nil {
		spec = &wire.CaptureSpec{}
	}
	cctx, cancel := context.WithDeadline(ctx, j.meta.ExpiresAt)
	defer cancel()
	res, err := capture.Capture(cctx, capture.Options{Exclude: spec.Exclude, MaxFileSize: spec.MaxFileSize, MaxFiles: spec.MaxFiles})
	if err != nil {
		ret.Error = err.Error()
		return ret
	}
	total := 0
	for _, b := range res.Files {
		total += len(b)
	}
	if total > wire.MaxCaptureFiles {
		ret.Error = fmt.Sprintf("the capture holds %d bytes of files, over the %d a return may carry: capture with a smaller --max-file-size or more --exclude patterns", total, wire.MaxCaptureFiles)
		return ret
	}
	// What the operator's brine capture would refuse (its HCL over capture.MaxHCL) fails here,
	// with the reason, rather than travelling to be refused there.
	if err := capture.CheckBundle(res.Files); err != nil {
		ret.Error = "the capture is not one brine capture takes: " + err.Error() + "; capture with more --exclude patterns"
		return ret
	}
	sum, _ := json.Marshal(res.Summary)
	ret.Report, err = json.Marshal(wire.CaptureReport{Files: res.Files, Summary: sum})
	if err != nil {
		ret.Error = err.Error()
		return ret
	}
	ret.Success = true
	e.log.Info("captured this host", "jid", j.meta.JID, "files", len(res.Files), "bytes", total)
	return ret
}
