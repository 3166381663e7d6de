package cloud

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/brinecm/brine/control"
	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/pki"
	"github.com/brinecm/brine/states"
)

// ControlMaster is the Master of `brine cloud`: it reaches a running master over its control
// socket. Enrolment tokens, bootstrap info and the enrolment wait come from the master;
// Converge reads each bundle from BundleDir/NAME here, as `brine apply` does, and sends it.
type ControlMaster struct {
	Client *control.Client
	// BundleDir is where bundles named by profiles live (cloud.hcl's bundle_dir).
	BundleDir string
}

var _ Master = (*ControlMaster)(nil)

// CreateToken asks the master for a single-use enrolment token for minionID alone.
func (c *ControlMaster) CreateToken(ctx context.Context, minionID string, groups []string, ttl time.Duration) (string, error) {
	if !pki.ValidID(minionID) {
		return "", fmt.Errorf("invalid minion id %q", minionID)
	}
	r, err := c.Client.TokenCreate(ctx, control.TokenRequest{ID: minionID, Groups: groups, TTL: ttl})
	if err != nil {
		return "", err
	}
	if r.Token == "" {
		return "", errors.New("the master returned no token")
	}
	return r.Token, nil
}

// Bootstrap asks the master for its bootstrap endpoint, address and fingerprint.
func (c *ControlMaster) Bootstrap(ctx context.Context) (BootstrapInfo, error) {
	r, err := c.Client.Bootstrap(ctx)
	if err != nil {
		return BootstrapInfo{}, err
	}
	return BootstrapInfo(r), nil
}

// WaitEnrolled blocks until the master reports minionID enrolled and listening, or ctx ends
// (then it returns ctx.Err()).
func (c *ControlMaster) WaitEnrolled(ctx context.Context, minionID string) error {
	err := c.Client.WaitEnrolled(ctx, control.WaitEnrolledRequest{Minion: minionID})
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// Converge applies each bundle, in order, to minionID alone, and fails on the first bundle
// that is invalid, has a failed resource, or gets no return before ctx's deadline (or the
// master's job_timeout when ctx has none).
func (c *ControlMaster) Converge(ctx context.Context, minionID string, bundles []string) error {
	for _, name := range bundles {
		dir, err := BundlePath(c.BundleDir, name)
		if err != nil {
			return err
		}
		b, err := states.ReadBundle(dir)
		if err != nil {
			return fmt.Errorf("bundle %s: %w", name, err)
		}
		req := control.ProvisionRequest{Minion: minionID, Bundle: b.Marshal()}
		if dl, ok := ctx.Deadline(); ok {
			req.Timeout = time.Until(dl)
		}
		var ret *wire.Return
		var missing bool
		var diags string
		err = c.Client.Provision(ctx, req, func(ev control.Event) {
			switch ev.Event {
			case "return":
				ret = ev.Return
			case "missing":
				missing = true
			case "invalid":
				diags = ev.Diagnostics
			}
		})
		switch {
		case diags != "":
			return fmt.Errorf("bundle %s is invalid:\n%s", name, diags)
		case err != nil:
			return fmt.Errorf("bundle %s: %w", name, err)
		case missing || ret == nil:
			return fmt.Errorf("bundle %s: no return from %s", name, minionID)
		case !ret.Success:
			return fmt.Errorf("bundle %s failed: %s", name, returnFailure(*ret))
		}
	}
	return nil
}

// returnFailure says in one line why a return is not a success.
func returnFailure(r wire.Return) string {
	if r.Error != "" {
		return r.Error
	}
	var rep states.Report
	if err := json.Unmarshal(r.Report, &rep); err == nil {
		var failed []string
		for _, res := range rep.Results {
			if res.Status == states.StatusFailed {
				failed = append(failed, res.Address+": "+res.Error)
			}
		}
		if len(failed) > 0 {
			return fmt.Sprintf("%d resource(s) failed: %v", len(failed), failed)
		}
	}
	return "the minion reported a failure"
}
