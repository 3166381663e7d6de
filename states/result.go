package states

import (
	"time"
)

// Status is the outcome of one resource in a plan or an apply.
type Status string

// The statuses a resource can end in.
const (
	StatusOK      Status = "ok"      // already as wanted; nothing done
	StatusChanged Status = "changed" // differed; applied (or, in a plan, would be)
	StatusFailed  Status = "failed"  // check or apply failed, or the re-check still differed
	StatusSkipped Status = "skipped" // not run: a dependency failed or a guard said no
)

// Result is what happened to one resource.
type Result struct {
	Address  string        `json:"address"`         // e.g. file["/etc/motd"] or service.nginx
	Type     string        `json:"type"`            // resource type, e.g. "file"
	Name     string        `json:"name"`            // resource label ("" for unlabelled types like ufw)
	Status   Status        `json:"status"`          // ok | changed | failed | skipped
	Diff     string        `json:"diff,omitempty"`  // human-readable difference between current and wanted
	Error    string        `json:"error,omitempty"` // why it failed or was skipped
	Notified bool          `json:"notified,omitempty"`
	Duration time.Duration `json:"duration_ns"`
}

// Report is the outcome of a whole plan or apply, in the order resources ran.
type Report struct {
	Results  []Result      `json:"results"`
	DryRun   bool          `json:"dry_run"`
	Duration time.Duration `json:"duration_ns"`
}

// Counts returns how many resources ended in each status.
func (r *Report) Counts() map[Status]int {
	c := map[Status]int{StatusOK: 0, StatusChanged: 0, StatusFailed: 0, StatusSkipped: 0}
	for _, res := range r.Results {
		c[res.Status]++
	}
	return c
}

// Failed reports whether any resource failed or was skipped because of a failure.
func (r *Report) Failed() bool {
	for _, res := range r.Results {
		if res.Status == StatusFailed {
			return true
		}
	}
	return false
}
