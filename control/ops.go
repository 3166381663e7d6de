package control

import (
	"time"

	"github.com/brinecm/brine/internal/wire"
)

// Op is one operation of the control socket: its name on the wire, the request the CLI sends
// and the response the master ends with (job ops stream Events before it). The master's
// handler and the client's call are both typed by the Op, so they cannot disagree.
//
// Adding an op: declare its request and response types and an Op here, a method on Client
// that calls it (client.go), and one Handle line in the master with its handler.
type Op[Req, Resp any] struct {
	// Name is the op on the wire.
	Name string
	// MaxRequest bounds the encoded request, in bytes; 0 is DefaultMaxRequest.
	MaxRequest int64
}

// Request size bounds. An op whose request carries a bundle (or a whole states tree) takes up to
// MaxBundleRequest: states.MaxBundleBytes (64 MiB) of files, base64 in JSON, with variable
// files beside it. Every other op takes up to DefaultMaxRequest (a site.hcl is at most 1 MiB).
const (
	DefaultMaxRequest = 4 << 20
	MaxBundleRequest  = 200 << 20
)

func (o Op[Req, Resp]) maxRequest() int64 {
	if o.MaxRequest > 0 {
		return o.MaxRequest
	}
	return DefaultMaxRequest
}

// The ops. Job ops (ping, apply, run, capture, converge, provision) stream the job's Events and end
// with None once the job is done; the others answer with their response alone.
var (
	OpPing      = Op[PingRequest, None]{Name: "ping"}
	OpApply     = Op[ApplyRequest, None]{Name: "apply", MaxRequest: MaxBundleRequest}
	OpRun       = Op[RunRequest, None]{Name: "run"}
	OpCapture   = Op[CaptureRequest, None]{Name: "capture"}
	OpConverge  = Op[ConvergeRequest, None]{Name: "converge", MaxRequest: MaxBundleRequest}
	OpProvision = Op[ProvisionRequest, None]{Name: "provision", MaxRequest: MaxBundleRequest}

	OpStatus = Op[StatusRequest, StatusResponse]{Name: "status"}
	OpJobs   = Op[JobsRequest, JobsResponse]{Name: "jobs.list"}
	OpJob    = Op[JobRequest, JobDetail]{Name: "jobs.show"}
	OpFacts  = Op[FactsRequest, FactsResponse]{Name: "facts"}
	OpDrift  = Op[DriftRequest, DriftResponse]{Name: "drift"}
	OpFinger = Op[None, FingerResponse]{Name: "finger"}

	OpKeyList       = Op[KeyListRequest, KeyListResponse]{Name: "key.list"}
	OpKeyAccept     = Op[KeyAcceptRequest, KeyAcceptResponse]{Name: "key.accept"}
	OpKeyReject     = Op[KeyRequest, KeyIDs]{Name: "key.reject"}
	OpKeyDelete     = Op[KeyRequest, KeyIDs]{Name: "key.delete"}
	OpKeyGroups     = Op[KeyGroupsRequest, KeyIDs]{Name: "key.groups"}
	OpKeyAcceptTinc = Op[KeyAcceptTincRequest, KeyIDs]{Name: "key.accept-tinc"}
	OpTokenCreate   = Op[TokenRequest, TokenResponse]{Name: "token.create"}

	OpBootstrap    = Op[None, BootstrapInfo]{Name: "bootstrap"}
	OpWaitEnrolled = Op[WaitEnrolledRequest, None]{Name: "wait-enrolled"}
)

// None is the request or response of an op that has none.
type None struct{}

// SiteRef is a site sent with a request: a states tree (states.Bundle.Marshal of the site
// directory) for converge, or a bundle of its site.hcl alone for the groups of ping, apply,
// run and status. Empty: the master's configured site. Dir names it in diagnostics.
type SiteRef struct {
	Site []byte `json:"site,omitempty"`
	Dir  string `json:"site_dir,omitempty"`
}

// PingRequest asks the minions Target names to answer.
type PingRequest struct {
	Target  string        `json:"target"`
	Timeout time.Duration `json:"timeout,omitempty"`
	SiteRef
}

// ApplyRequest applies a bundle to the minions Target names.
type ApplyRequest struct {
	Target string `json:"target"`
	// Bundle is states.Bundle.Marshal of the bundle; BundleName names it in the job history
	// (its directory's name).
	Bundle     []byte            `json:"bundle"`
	BundleName string            `json:"bundle_name,omitempty"`
	DryRun     bool              `json:"dry_run,omitempty"`
	Timeout    time.Duration     `json:"timeout,omitempty"` // 0: the master's job_timeout
	Vars       map[string]string `json:"vars,omitempty"`
	VarFiles   map[string][]byte `json:"var_files,omitempty"`
	Rollout    Rollout           `json:"rollout,omitzero"`
	SiteRef
}

// RunRequest runs a shell command on the minions Target names.
type RunRequest struct {
	Target  string        `json:"target"`
	Command string        `json:"command"`
	Timeout time.Duration `json:"timeout,omitempty"`
	Rollout Rollout       `json:"rollout,omitzero"`
	SiteRef
}

// CaptureRequest has the minions Target names capture themselves and return the bundles.
type CaptureRequest struct {
	Target  string            `json:"target"`
	Timeout time.Duration     `json:"timeout,omitempty"`
	Capture *wire.CaptureSpec `json:"capture,omitempty"` // nil: the defaults
	SiteRef
}

// ConvergeRequest applies the site (highstate) to the minions Target names ("" is every one).
type ConvergeRequest struct {
	Target   string            `json:"target,omitempty"`
	DryRun   bool              `json:"dry_run,omitempty"`
	Timeout  time.Duration     `json:"timeout,omitempty"`
	Vars     map[string]string `json:"vars,omitempty"`
	VarFiles map[string][]byte `json:"var_files,omitempty"`
	Rollout  Rollout           `json:"rollout,omitzero"`
	SiteRef
}

// ProvisionRequest applies one bundle to one new minion, by id, for cloud provisioning: no
// target, no site.
type ProvisionRequest struct {
	Minion   string            `json:"minion"`
	Bundle   []byte            `json:"bundle"`
	Timeout  time.Duration     `json:"timeout,omitempty"`
	Vars     map[string]string `json:"vars,omitempty"`
	VarFiles map[string][]byte `json:"var_files,omitempty"`
}

// StatusRequest asks about the minions Target names.
type StatusRequest struct {
	Target string `json:"target"`
	SiteRef
}

// StatusResponse is one MinionStatus per minion, the answering master's name and its store's
// health.
type StatusResponse struct {
	Minions []MinionStatus `json:"minions"`
	Master  string         `json:"master,omitempty"`
	Store   *StoreHealth   `json:"store,omitempty"`
}

// JobsRequest lists the newest Limit jobs (0: 50).
type JobsRequest struct {
	Limit int `json:"limit,omitempty"`
}

// JobsResponse is the jobs, newest first.
type JobsResponse struct {
	Jobs []JobSummary `json:"jobs"`
}

// JobRequest asks for one job and its returns.
type JobRequest struct {
	JID string `json:"jid"`
}

// FactsRequest asks for the last facts of the minions Target names.
type FactsRequest struct {
	Target string `json:"target"`
}

// FactsResponse maps minion ids to their facts.
type FactsResponse struct {
	Facts map[string]map[string]any `json:"facts"`
}

// DriftRequest asks for the last drift checks of the minions Target names ("" is every one);
// All includes the checks that found no drift.
type DriftRequest struct {
	Target string `json:"target,omitempty"`
	All    bool   `json:"all,omitempty"`
}

// DriftResponse is the drift records.
type DriftResponse struct {
	Records []DriftRecord `json:"records"`
}

// FingerResponse is the master's key fingerprint.
type FingerResponse struct {
	Finger string `json:"finger"`
}

// KeyListRequest lists the keys whose id matches Glob ("" is every key).
type KeyListRequest struct {
	Glob string `json:"glob,omitempty"`
}

// KeyListResponse is the keys, the master's fingerprint and name.
type KeyListResponse struct {
	Keys         []KeyInfo `json:"keys"`
	MasterFinger string    `json:"master_finger"`
	Master       string    `json:"master,omitempty"`
}

// KeyAcceptRequest accepts the pending keys whose id matches Glob, granting Groups. All also
// accepts rejected keys; Finger, when set, accepts only the key with that fingerprint.
type KeyAcceptRequest struct {
	Glob   string   `json:"glob"`
	Groups []string `json:"groups,omitempty"`
	All    bool     `json:"all,omitempty"`
	Finger string   `json:"finger,omitempty"`
}

// KeyAcceptResponse is the accepted keys.
type KeyAcceptResponse struct {
	IDs  []string  `json:"ids"`
	Keys []KeyInfo `json:"keys"`
}

// KeyRequest names the keys an op acts on (a glob on the id).
type KeyRequest struct {
	Glob string `json:"glob"`
}

// KeyGroupsRequest sets the groups of the accepted keys whose id matches Glob.
type KeyGroupsRequest struct {
	Glob   string   `json:"glob"`
	Groups []string `json:"groups,omitempty"`
}

// KeyAcceptTincRequest pins the changed tinc keys the minions Glob names reported, for the
// tinc networks Network names (a glob; "" is every one).
type KeyAcceptTincRequest struct {
	Glob    string `json:"glob"`
	Network string `json:"network,omitempty"`
}

// KeyIDs is the ids of the keys an op changed.
type KeyIDs struct {
	IDs []string `json:"ids"`
}

// TokenRequest creates an enrolment token for the minion id (or id glob) ID ("" any), scoped
// to Groups and valid for TTL.
type TokenRequest struct {
	ID     string        `json:"id,omitempty"`
	Groups []string      `json:"groups,omitempty"`
	TTL    time.Duration `json:"ttl,omitempty"`
}

// TokenResponse is the token and when it expires.
type TokenResponse struct {
	Token   string    `json:"token"`
	Expires time.Time `json:"expires"`
}

// WaitEnrolledRequest waits until the minion Minion is accepted and listening, or Timeout (0:
// until the CLI hangs up).
type WaitEnrolledRequest struct {
	Minion  string        `json:"minion"`
	Timeout time.Duration `json:"timeout,omitempty"`
}
