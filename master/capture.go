package master

import (
	"context"
	"fmt"

	"github.com/brinecm/brine/control"

	"github.com/brinecm/brine/internal/wire"
)

// Bounds of a capture job's options (what the control socket may ask).
const (
	maxCaptureExcludes   = 256
	maxCaptureExcludeLen = 1024
)

// ctlCapture serves the control op capture: a job of kind capture to the minions the target
// names.
func (m *Master) ctlCapture(ctx context.Context, req control.CaptureRequest, emit func(Event)) (control.None, error) {
	spec, err := captureSpec(JobSpec{Kind: wire.JobPing, Target: req.Target, Timeout: req.Timeout}, req.Capture)
	if err != nil {
		return none, err
	}
	return none, m.startJob(ctx, spec, req.SiteRef, Rollout{}, emit)
}

// captureSpec makes spec a capture job with the options c (nil: the defaults).
func captureSpec(spec JobSpec, c *wire.CaptureSpec) (JobSpec, error) {
	if c == nil {
		c = &wire.CaptureSpec{}
	}
	if len(c.Exclude) > maxCaptureExcludes {
		return spec, fmt.Errorf("capture: %d exclude patterns; at most %d", len(c.Exclude), maxCaptureExcludes)
	}
	for _, e := range c.Exclude {
		if len(e) > maxCaptureExcludeLen || e == "" {
			return spec, fmt.Errorf("capture: an exclude pattern is empty or longer than %d bytes", maxCaptureExcludeLen)
		}
	}
	if c.MaxFileSize < 0 || c.MaxFileSize > wire.MaxCaptureFiles || c.MaxFiles < 0 {
		return spec, fmt.Errorf("capture: max file size %d is not between 0 and %d, or max files %d is negative", c.MaxFileSize, wire.MaxCaptureFiles, c.MaxFiles)
	}
	spec.Kind = wire.JobCapture
	spec.Capture = c
	return spec, nil
}
