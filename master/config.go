package master

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/brinecm/brine/internal/hclfile"
	"github.com/brinecm/brine/states/bounded"
	"github.com/hashicorp/hcl/v2"
)

// Config is a master's configuration (master.hcl). Every field has a default, so a master runs
// with no file at all:
//
//	data_dir        = "/var/lib/brine/master"  # keys, key store, job store, control socket
//	publish_addr    = "0.0.0.0:4505"           # PUB: jobs and heartbeats
//	request_addr    = "0.0.0.0:4506"           # ROUTER: auth, returns, facts
//	auto_accept     = false                    # accept every new minion key (labs only)
//	session_rotate  = "24h"                    # start a new session key generation this often
//	heartbeat       = "5s"                     # publish a heartbeat this often
//	job_timeout     = "5m"                     # default `brine apply --timeout`
//	secrets_file    = "<data_dir>/secrets.hcl" # secret "NAME" { value = "...", target = "group:db" }
//	control_socket  = "<data_dir>/master.sock" # the operator CLI's unix socket (0600)
//	bootstrap_addr  = ""                       # HTTP address serving this binary to new droplets; off when empty
//	advertise_addr  = ""                       # host droplets reach the master at (default: bootstrap_addr's host)
//	site            = ""                       # states tree (site.hcl + bundles): default of `brine converge --site`, and its groups in every target
//	max_conns_per_source      = 512            # live connections per source address, on each port
//	max_handshakes_per_source = 64             # unfinished handshakes per source address, on each port
//	preauth_rate_per_source   = 50             # messages/s from unauthenticated peers per source address
//	preauth_rate    = 1000                     # messages/s from unauthenticated peers handled in all
//	max_pending     = 1000                     # pending keys in total; new ones are refused beyond
//	max_pending_per_source = 64                # pending keys first presented from one address (IPv6: one /64)
//	store           = ""                       # "": files in data_dir (one master); "postgres://...": shared by many masters
//	name            = "<hostname>"             # this master's name in presence leases (brine status)
//	job_retention   = "720h"                   # jobs older than this are pruned from the history
//	job_max         = 100000                   # at most this many jobs are kept (the oldest go first)
//	job_history_mb  = 8192                     # at most this many MiB of jobs and returns are kept (the oldest go first)
//	metrics_addr    = ""                       # HTTP address of Prometheus metrics (/metrics); off when empty
//	compile_memory_mb = 1024                   # memory bound of one bundle compile (a child process)
//	compile_cpu     = "30s"                    # CPU bound of one bundle compile (killed at twice that, wall clock)
//	schedule "NAME" { target = "*", every = "30m", splay = "5m", mode = "converge" }  # or mode = "drift"
type Config struct {
	DataDir       string `hcl:"data_dir,optional"`
	PublishAddr   string `hcl:"publish_addr,optional"`
	RequestAddr   string `hcl:"request_addr,optional"`
	AutoAccept    bool   `hcl:"auto_accept,optional"`
	SessionRotate string `hcl:"session_rotate,optional"`
	Heartbeat     string `hcl:"heartbeat,optional"`
	JobTimeout    string `hcl:"job_timeout,optional"`
	SecretsFile   string `hcl:"secrets_file,optional"`
	ControlSocket string `hcl:"control_socket,optional"`
	BootstrapAddr string `hcl:"bootstrap_addr,optional"`
	AdvertiseAddr string `hcl:"advertise_addr,optional"`
	Site          string `hcl:"site,optional"`
	// MaxPending and MaxPendingPerSource bound the pending keys unauthenticated peers can make
	// (0: the defaults, 1000 and 64).
	MaxPending          int `hcl:"max_pending,optional"`
	MaxPendingPerSource int `hcl:"max_pending_per_source,optional"`

	// Per-source limits of the publish and request ports (0: the defaults of zmtp.DefaultLimits).
	// Many minions behind one NAT address (or the swarm benchmark on loopback) need more.
	MaxConnsPerSource      int `hcl:"max_conns_per_source,optional"`
	MaxHandshakesPerSource int `hcl:"max_handshakes_per_source,optional"`
	PreAuthRatePerSource   int `hcl:"preauth_rate_per_source,optional"`
	// PreAuthRate bounds the messages of unauthenticated peers the master handles per second
	// from all sources together (0: the default, 1000): each is a signature or a box.
	PreAuthRate int `hcl:"preauth_rate,optional"`

	// Store selects the system of record: empty for the embedded files and bbolt in DataDir,
	// a postgres:// or postgresql:// URL for a PostgreSQL database that several masters share.
	Store string `hcl:"store,optional"`
	// Name is this master's name in the presence leases of its minions (default: the host name
	// and the request address).
	Name string `hcl:"name,optional"`

	// JobRetention and JobMax bound the job history (history.go).
	JobRetention string `hcl:"job_retention,optional"`
	JobMax       int    `hcl:"job_max,optional"`
	// JobHistoryMB bounds the bytes of the job history (0: the default, DefaultJobHistoryMB):
	// what minions return is kept within it whatever they send.
	JobHistoryMB int `hcl:"job_history_mb,optional"`
	// MetricsAddr is the HTTP address of the Prometheus metrics (metrics.go); off when empty.
	MetricsAddr string `hcl:"metrics_addr,optional"`
	// CompileMemoryMB and CompileCPU bound each compile of a submitted bundle, which runs in a
	// child process (states/bounded; 0 and "": the defaults, 1024 MiB and 30s).
	CompileMemoryMB int    `hcl:"compile_memory_mb,optional"`
	CompileCPU      string `hcl:"compile_cpu,optional"`
	// Schedules converge or check the site between pushes (schedule.go).
	Schedules []ScheduleConfig `hcl:"schedule,block"`

	rotate, heartbeat, jobTimeout, jobRetention time.Duration
	compileLimits                               bounded.Limits
	// admitGate, when set, holds every subscriber's admission until it is closed (tests).
	admitGate <-chan struct{}
	// presenceLease replaces leaseFor, the presence lease (tests; 0: leaseFor).
	presenceLease time.Duration
	// historyBytes is JobHistoryMB in bytes (tests set less than a MiB: HistoryBytes).
	historyBytes int64
	// fileLimit replaces the process's RLIMIT_NOFILE in checkFileLimit (tests; 0: the real one).
	fileLimit uint64
	// logEvery replaces garbageLogEvery, the interval of the rate-limited log lines (tests).
	logEvery time.Duration
	// factsRate and factsBurst, when set, replace the facts reports a minion may make (tests:
	// FactsRate).
	factsRate, factsBurst float64
	// testLog is TestMaster's logger when set (tests: LogTo).
	testLog *slog.Logger
}

// DefaultJobHistoryMB is job_history_mb's default: 8 GiB of records, twice the 100,000 jobs of 50
// minions of BENCHMARKS.md ("job history", about 4 GB), so that job_max and job_retention are
// what bound an honest fleet's history, and a minion that returns all it may cannot fill more.
const DefaultJobHistoryMB = 8192

// MinJobHistoryMB is the least job_history_mb: four of the largest returns (wire.MaxRequestFrame).
const MinJobHistoryMB = 64

// postgresStore reports whether store names a PostgreSQL database.
func postgresStore(store string) bool {
	return strings.HasPrefix(store, "postgres://") || strings.HasPrefix(store, "postgresql://")
}

// DefaultDataDir is where a master keeps its state when nothing says otherwise.
const DefaultDataDir = "/var/lib/brine/master"

// LoadConfig reads a master.hcl; an empty path means built-in defaults. dataDir, when not
// empty, overrides the file's data_dir (the --data-dir flag).
func LoadConfig(path, dataDir string) (Config, hcl.Diagnostics) {
	var c Config
	if path != "" {
		if diags := hclfile.Decode(path, "master config", &c); diags.HasErrors() {
			return c, diags
		}
	}
	if dataDir != "" {
		c.DataDir = dataDir
	}
	if err := c.fill(); err != nil {
		return c, hclfile.Diagnose(path, "Invalid master config", err)
	}
	return c, nil
}

// fill sets defaults and parses durations.
func (c *Config) fill() error {
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	abs, err := filepath.Abs(c.DataDir)
	if err != nil {
		return err
	}
	c.DataDir = abs
	if c.Site != "" {
		if c.Site, err = filepath.Abs(c.Site); err != nil {
			return err
		}
	}
	if c.PublishAddr == "" {
		c.PublishAddr = "0.0.0.0:4505"
	}
	if c.RequestAddr == "" {
		c.RequestAddr = "0.0.0.0:4506"
	}
	if c.MaxConnsPerSource < 0 || c.MaxHandshakesPerSource < 0 || c.PreAuthRatePerSource < 0 {
		return hclfile.Field(errors.New("max_conns_per_source, max_handshakes_per_source and preauth_rate_per_source must not be negative"))
	}
	if c.PreAuthRate < 0 {
		return hclfile.Field(errors.New("preauth_rate must not be negative"), "preauth_rate")
	}
	if c.PreAuthRate == 0 {
		c.PreAuthRate = defaultPreAuthRate
	}
	if c.SecretsFile == "" {
		c.SecretsFile = filepath.Join(c.DataDir, "secrets.hcl")
	}
	if c.MaxPending < 0 || c.MaxPendingPerSource < 0 {
		return hclfile.Field(errors.New("max_pending and max_pending_per_source must not be negative"))
	}
	if c.Store != "" && !postgresStore(c.Store) {
		return hclfile.Field(errors.New("store must be empty (files in data_dir) or a postgres://user@host/db URL"), "store")
	}
	if c.ControlSocket == "" {
		c.ControlSocket = filepath.Join(c.DataDir, "master.sock")
	}
	if err := c.fillSchedules(); err != nil {
		return err
	}
	if c.CompileMemoryMB < 0 || (c.CompileMemoryMB > 0 && c.CompileMemoryMB < 128) {
		return hclfile.Field(fmt.Errorf("compile_memory_mb must be at least 128 (or 0: the default, %d)", bounded.DefaultMemory>>20), "compile_memory_mb")
	}
	c.compileLimits.Memory = int64(c.CompileMemoryMB) << 20
	if c.CompileCPU != "" {
		v, err := time.ParseDuration(c.CompileCPU)
		if err != nil || v < time.Second {
			return hclfile.Field(fmt.Errorf("compile_cpu: bad duration %q (want at least 1s, e.g. \"30s\")", c.CompileCPU), "compile_cpu")
		}
		c.compileLimits.CPU = v
	}
	if c.JobMax < 0 {
		return hclfile.Field(errors.New("job_max must not be negative"), "job_max")
	}
	if c.JobMax == 0 {
		c.JobMax = 100000
	}
	if c.JobHistoryMB < 0 || (c.JobHistoryMB > 0 && c.JobHistoryMB < MinJobHistoryMB) {
		return hclfile.Field(fmt.Errorf("job_history_mb must be at least %d (or 0: the default, %d)", MinJobHistoryMB, DefaultJobHistoryMB), "job_history_mb")
	}
	if c.JobHistoryMB == 0 {
		c.JobHistoryMB = DefaultJobHistoryMB
	}
	if c.historyBytes == 0 {
		c.historyBytes = int64(c.JobHistoryMB) << 20
	}
	for _, d := range []struct {
		name string
		s    *string
		def  string
		out  *time.Duration
	}{{"session_rotate", &c.SessionRotate, "24h", &c.rotate}, {"heartbeat", &c.Heartbeat, "5s", &c.heartbeat}, {"job_timeout", &c.JobTimeout, "5m", &c.jobTimeout}, {"job_retention", &c.JobRetention, "720h", &c.jobRetention}} {
		if *d.s == "" {
			*d.s = d.def
		}
		v, err := time.ParseDuration(*d.s)
		if err != nil || v <= 0 {
			return hclfile.Field(fmt.Errorf("%s: bad duration %q (want e.g. %q)", d.name, *d.s, d.def), d.name)
		}
		*d.out = v
	}
	return nil
}
