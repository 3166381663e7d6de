package control

import (
	"time"

	"github.com/brinecm/brine/internal/jobstore"
	"github.com/brinecm/brine/internal/wire"
)

// The data the ops carry. The master works with these types directly (master.Event is an
// alias of Event, and so on): what it streams is what the CLI reads.

// Event is one step of a job as the control socket streams it to the CLI.
type Event struct {
	Event       string       `json:"event"` // published | return | missing | left_out | invalid | done | batch | batch_done | stopped | unassigned | unknown
	JID         string       `json:"jid,omitempty"`
	Phase       int          `json:"phase,omitempty"`
	Minions     []string     `json:"minions,omitempty"`
	Return      *wire.Return `json:"return,omitempty"`
	Missing     []string     `json:"missing,omitempty"`
	Error       string       `json:"error,omitempty"`
	Diagnostics string       `json:"diagnostics,omitempty"`
	// Hint explains an "unknown" event: what the target names that does not exist, with
	// "did you mean" (master/targethints.go).
	Hint string `json:"hint,omitempty"`

	// Rollouts (batch | batch_done | stopped, and the final done).
	Batch     int      `json:"batch,omitempty"`
	Batches   int      `json:"batches,omitempty"`
	Canary    bool     `json:"canary,omitempty"`
	Failed    []string `json:"failed,omitempty"`
	Untouched []string `json:"untouched,omitempty"`
}

// Rollout is how an apply spreads over its minions: a canary set first, alone, then batches of
// the rest, stopping once too many minions failed. The zero Rollout is one batch of everyone.
type Rollout struct {
	Batch       string `json:"batch,omitempty"`        // "" (all at once), "N" minions or "N%" of the target per batch
	Canary      string `json:"canary,omitempty"`       // a target applied first, alone; any failure there stops the rollout
	MaxFailures int    `json:"max_failures,omitempty"` // the rollout stops once more than this many minions failed (or did not return)
}

// Enabled reports whether the rollout is more than one batch of everyone.
func (r Rollout) Enabled() bool { return r.Batch != "" || r.Canary != "" }

// KeyInfo is one key as `brine key list` shows it.
type KeyInfo struct {
	ID     string   `json:"id"`
	State  string   `json:"state"`
	Finger string   `json:"finger"`
	Groups []string `json:"groups,omitempty"`
	// Requested is what the minion's config asks for: never granted by the master.
	Requested []string  `json:"requested,omitempty"`
	Source    string    `json:"source,omitempty"` // the address the key was first presented from
	Created   time.Time `json:"created,omitzero"` // when the key was first presented
	// Address is the address the master saw the minion's last facts come from (attested).
	Address string `json:"address,omitempty"`
	// TincPending names the tinc networks whose reported key differs from the pinned one: the
	// master keeps the pinned key until `brine key accept-tinc`.
	TincPending []string `json:"tinc_pending,omitempty"`
	// Master is the master the minion is connected to (its presence lease), "" when none.
	Master string `json:"master,omitempty"`
}

// JobSummary is one line of `brine jobs list`: the job and its outcome counted from its returns.
type JobSummary struct {
	jobstore.Job
	Succeeded int `json:"succeeded"`
	Failed    int `json:"failed"`
	// NoReturn counts the minions that have not returned; Waiting says the job has not expired,
	// so they may still.
	NoReturn int  `json:"no_return"`
	Waiting  bool `json:"waiting,omitempty"`
}

// JobDetail is a job with every minion's return, as `brine jobs show` prints it.
type JobDetail struct {
	Job     jobstore.Job           `json:"job"`
	Returns map[string]wire.Return `json:"returns"`
	Missing []string               `json:"missing,omitempty"`
}

// MinionStatus is one minion as `brine status` shows it. Version is the brine_version fact the
// minion reports (a claim).
type MinionStatus struct {
	ID        string    `json:"id"`
	Connected bool      `json:"connected"`
	LastSeen  time.Time `json:"last_seen,omitzero"` // since the master started
	Version   string    `json:"version,omitempty"`
	Groups    []string  `json:"groups"`
	// ClaimedGroups are the site groups among Groups that the minion is in only through its facts:
	// claims (docs/states.md, "Facts are claims").
	ClaimedGroups []string    `json:"claimed_groups,omitempty"`
	LastJob       *JobOutcome `json:"last_job,omitempty"`
	// LastDrift is the minion's last drift check by a schedule, without the diffs (`brine drift`
	// shows them).
	LastDrift *DriftSummary `json:"last_drift,omitempty"`
	// Master is the master the minion is connected to: this one, or another of a shared store
	// (its presence lease); "" when not connected.
	Master string `json:"master,omitempty"`
}

// JobOutcome is a minion's part of one job.
type JobOutcome struct {
	JID     string    `json:"jid"`
	Kind    string    `json:"kind"`
	Target  string    `json:"target"`
	DryRun  bool      `json:"dry_run,omitempty"`
	Created time.Time `json:"created"`
	Outcome string    `json:"outcome"` // succeeded | failed | no return | running
	Error   string    `json:"error,omitempty"`
}

// DriftChange is one resource a drift check found different from the site.
type DriftChange struct {
	Address string `json:"address"`
	Diff    string `json:"diff,omitempty"`
}

// DriftRecord is a minion's last drift check.
type DriftRecord struct {
	Minion   string        `json:"minion"`
	Schedule string        `json:"schedule"`
	JID      string        `json:"jid"`
	Checked  time.Time     `json:"checked"`
	Drifted  bool          `json:"drifted"`
	Changes  []DriftChange `json:"changes,omitempty"`
	// Error says why the check itself failed (the bundle did not compile, a check errored).
	Error string `json:"error,omitempty"`
}

// DriftSummary is a minion's last drift check as `brine status` shows it.
type DriftSummary struct {
	JID     string    `json:"jid"`
	Checked time.Time `json:"checked"`
	Drifted bool      `json:"drifted"`
	Changes int       `json:"changes"`
	Error   string    `json:"error,omitempty"`
}

// StoreHealth is what `brine status` and the metrics say about the master's store.
type StoreHealth struct {
	Kind  string    `json:"kind"`            // "files" or "postgres"
	Up    bool      `json:"up"`              // the store answers (files: always)
	Since time.Time `json:"since,omitzero"`  // when it was last found lost or back (postgres)
	Error string    `json:"error,omitempty"` // why it does not answer
}

// BootstrapInfo is what a new droplet's user_data needs to become a minion of the master. It
// has the fields of cloud.BootstrapInfo, so each converts to the other.
type BootstrapInfo struct {
	BinaryURL         string `json:"binary_url"`
	SHA256            string `json:"sha256"`
	MasterAddr        string `json:"master_addr"`
	PublishPort       int    `json:"publish_port,omitempty"`
	RequestPort       int    `json:"request_port,omitempty"`
	MasterFingerprint string `json:"master_fingerprint"`
}
