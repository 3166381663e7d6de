package cloud

import (
	"context"
	"errors"
	"time"
)

// Master is what provisioning needs from the brine master. ControlMaster (control.go)
// implements it over the master's control socket (package control); cloud depends on nothing
// else of the master.
type Master interface {
	// CreateToken makes a single-use enrolment token for the minion minionID alone, scoped to
	// groups and valid for ttl. The token goes into the droplet's user_data only.
	CreateToken(ctx context.Context, minionID string, groups []string, ttl time.Duration) (token string, err error)
	// Bootstrap describes how a new droplet fetches brine and reaches the master.
	Bootstrap(ctx context.Context) (BootstrapInfo, error)
	// WaitEnrolled blocks until the minion minionID has enrolled with a token, or ctx ends
	// (then it returns ctx.Err()).
	WaitEnrolled(ctx context.Context, minionID string) error
	// Converge applies bundles (names under cloud.hcl's bundle_dir, in order) to minionID alone
	// and blocks until the minion returned; it returns an error if a bundle is invalid, any
	// resource failed or the minion did not answer before ctx ended.
	Converge(ctx context.Context, minionID string, bundles []string) error
}

// BootstrapInfo is what a droplet's user_data needs to become a minion.
type BootstrapInfo struct {
	// BinaryURL is the master's bootstrap HTTP endpoint serving the brine-minion binary for the
	// droplet's architecture (linux/amd64).
	BinaryURL string `json:"binary_url"`
	// SHA256 is the hex sha256 of that binary; the script refuses anything else.
	SHA256 string `json:"sha256"`
	// MasterAddr is the host or host:port minions connect to (minion.hcl's master).
	MasterAddr string `json:"master_addr"`
	// PublishPort and RequestPort, when set, are the master's ports (minion.hcl's
	// publish_port and request_port); then MasterAddr is a host only.
	PublishPort int `json:"publish_port,omitempty"`
	RequestPort int `json:"request_port,omitempty"`
	// MasterFingerprint pins the master's public key.
	MasterFingerprint string `json:"master_fingerprint"`
}

// ErrMasterUnreachable is returned by UnreachableMaster.
var ErrMasterUnreachable = errors.New("the master is not reachable: brine cloud create needs a running brine master " +
	"(enrolment tokens, the bootstrap binary); start one with `brine master` on this host")

// UnreachableMaster is a Master for when none can be reached: every method fails with
// ErrMasterUnreachable, so that create stops before making any droplet.
type UnreachableMaster struct{}

// CreateToken fails with ErrMasterUnreachable.
func (UnreachableMaster) CreateToken(context.Context, string, []string, time.Duration) (string, error) {
	return "", ErrMasterUnreachable
}

// Bootstrap fails with ErrMasterUnreachable.
func (UnreachableMaster) Bootstrap(context.Context) (BootstrapInfo, error) {
	return BootstrapInfo{}, ErrMasterUnreachable
}

// WaitEnrolled fails with ErrMasterUnreachable.
func (UnreachableMaster) WaitEnrolled(context.Context, string) error { return ErrMasterUnreachable }

// Converge fails with ErrMasterUnreachable.
func (UnreachableMaster) Converge(context.Context, string, []string) error {
	return ErrMasterUnreachable
}
