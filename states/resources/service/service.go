package service

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/brinecm/brine/internal/atomicfile"
	"github.com/brinecm/brine/internal/lazyre"
	"github.com/brinecm/brine/internal/safepath"
	"github.com/brinecm/brine/states"
	"github.com/brinecm/brine/states/resources/internal/daemon"
	"github.com/brinecm/brine/states/resources/internal/shell"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
)

// Type is the `service` resource type: a daemon running or stopped, enabled at boot or not, through systemd or, without it, a pidfile.
var Type = &states.Type{Name: "service", Labels: 1, Decode: decodeService}

// Where the pidfile mode keeps its files. Variables so that tests can point them at a temp dir.
var (
	serviceLogDir    = "/var/log/brine"      // <name>.log: stdout and stderr of the daemon
	serviceEnableDir = "/etc/brine/services" // <name>: the boot script of an enabled service
	servicePidDir    = "/run/brine/services" // <name>.pid when the bundle names no pidfile
)

// Bounds of the pidfile mode.
var (
	serviceStartWait = 5 * time.Second        // for a started daemon to be running with a pidfile
	serviceOwnPid    = 300 * time.Millisecond // after which we write the pidfile of a daemon still in the foreground
	serviceStopWait  = 10 * time.Second       // between SIGTERM and SIGKILL
)

var serviceNameRE = lazyre.New(`^[A-Za-z0-9][A-Za-z0-9@._:-]{0,127}$`)

type serviceConfig struct {
	State   string `hcl:"state,optional"`
	Enabled *bool  `hcl:"enabled,optional"`
	Reload  string `hcl:"reload,optional"`
	Command string `hcl:"command,optional"`
	Pidfile string `hcl:"pidfile,optional"`
}

// Service is a long-running daemon: managed through systemd when PID 1 is systemd, otherwise
// started by brine itself (detached, its own session, output to /var/log/brine/<name>.log) and
// tracked through a pidfile. On notify it restarts, or reloads with reload = "reload".
type Service struct {
	name    string
	state   string // running | stopped | "" (not managed)
	enabled *bool  // nil: not managed
	reload  string // restart | reload
	command string
	pidfile string
}

// serviceRun is the run-scoped memory of one service: whether this run started it, so that a
// notify right after does not restart it again.
type serviceRun struct{ started bool }

func decodeService(req *states.DecodeRequest) (states.Resource, hcl.Diagnostics) {
	var cfg serviceConfig
	diags := gohcl.DecodeBody(req.Body, req.Ctx, &cfg)
	if diags.HasErrors() {
		return nil, diags
	}
	subject := req.AttrRange
	s := &Service{name: req.Name, state: cfg.State, enabled: cfg.Enabled, reload: cfg.Reload, command: cfg.Command, pidfile: cfg.Pidfile}
	if !serviceNameRE.MatchString(s.name) || strings.Contains(s.name, "..") {
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid service name",
			Detail:  fmt.Sprintf("%q is not a service name: letters, digits and @ . _ : - only (it names a systemd unit and files under %s).", s.name, serviceLogDir),
			Subject: req.Block.LabelRanges[0].Ptr()})
	}
	switch s.state {
	case "", "running", "stopped":
	default:
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid service state",
			Detail:  fmt.Sprintf("state must be \"running\" or \"stopped\"; got %q.%s", s.state, states.DidYouMean(s.state, []string{"running", "stopped"})),
			Subject: subject("state")})
	}
	switch s.reload {
	case "":
		s.reload = "restart"
	case "restart", "reload":
	default:
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid reload",
			Detail:  fmt.Sprintf("reload says what a notify does: \"restart\" or \"reload\" (SIGHUP / systemctl reload); got %q.%s", s.reload, states.DidYouMean(s.reload, []string{"restart", "reload"})),
			Subject: subject("reload")})
	}
	if s.pidfile != "" && !filepath.IsAbs(s.pidfile) {
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid pidfile",
			Detail: fmt.Sprintf("pidfile must be an absolute path (got %q).", s.pidfile), Subject: subject("pidfile")})
	}
	if s.pidfile != "" && s.command == "" {
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "pidfile without command",
			Detail: "pidfile is for services brine starts itself where there is no systemd; give the command that starts the daemon too.", Subject: subject("pidfile")})
	}
	if diags.HasErrors() {
		return nil, diags
	}
	return s, diags
}

func (s *Service) runState(env *states.Env) *serviceRun {
	v, _ := env.Cached("service-run:"+s.name, func() (any, error) { return &serviceRun{}, nil })
	return v.(*serviceRun)
}

func useSystemd(env *states.Env) bool {
	v, _ := env.Cached("service:systemd", func() (any, error) { return daemon.Systemd(), nil })
	return v.(bool)
}

// serviceStatus is what a check found.
type serviceStatus struct {
	running bool
	enabled bool
	fixed   bool // systemd: the unit's enablement cannot be changed (static, generated, ...)
	masked  bool // systemd: the unit is masked; it can be neither started nor enabled
	stale   bool // systemd: the unit's files changed on disk since systemd loaded them
}

func (s *Service) status(ctx context.Context, env *states.Env) (serviceStatus, error) {
	if useSystemd(env) {
		return s.systemdStatus(ctx)
	}
	if s.command == "" && (s.state == "running" || (s.enabled != nil && *s.enabled)) {
		return serviceStatus{}, fmt.Errorf("service %s: this host has no systemd (no %s), and the service has no command: give command (and pidfile if the daemon writes one) to let brine run it", s.name, daemon.SystemdDir)
	}
	var st serviceStatus
	_, st.running = s.livePid()
	if s.enabled != nil {
		have, err := os.ReadFile(s.bootPath())
		fi, serr := os.Stat(s.bootPath())
		st.enabled = err == nil && serr == nil && fi.Mode()&0o111 != 0 && (s.command == "" || bytes.Equal(have, s.bootScript()))
	}
	return st, nil
}

// Check compares the service's state and enablement with the wanted ones.
func (s *Service) Check(ctx context.Context, env *states.Env) (string, error) {
	st, err := s.status(ctx, env)
	if err != nil {
		return "", err
	}
	if err := s.checkMasked(st); err != nil {
		return "", err
	}
	var d []string
	if st.stale {
		d = append(d, "unit: changed on disk -> systemctl daemon-reload")
	}
	switch {
	case s.state == "running" && !st.running:
		d = append(d, "state: stopped -> running")
	case s.state == "stopped" && st.running:
		d = append(d, "state: running -> stopped")
	}
	if s.enabled != nil && *s.enabled != st.enabled && !st.fixed {
		d = append(d, fmt.Sprintf("enabled: %t -> %t", st.enabled, *s.enabled))
	}
	return strings.Join(d, "\n"), nil
}

// Apply starts or stops the service and enables or disables it, as Check found needed.
func (s *Service) Apply(ctx context.Context, env *states.Env) error {
	st, err := s.status(ctx, env)
	if err != nil {
		return err
	}
	if err := s.checkMasked(st); err != nil {
		return err
	}
	if st.stale {
		if err := systemctl(ctx, "daemon-reload", ""); err != nil {
			return err
		}
	}
	switch {
	case s.state == "running" && !st.running:
		if err := s.start(ctx, env); err != nil {
			return err
		}
		s.runState(env).started = true
	case s.state == "stopped" && st.running:
		if err := s.stop(ctx, env); err != nil {
			return err
		}
	}
	if s.enabled != nil && *s.enabled != st.enabled && !st.fixed {
		if err := s.enable(ctx, env, *s.enabled); err != nil {
			return err
		}
	}
	return nil
}

// Notify restarts the service (or reloads it, with reload = "reload"). A service this run has
// just started is not restarted again; a stopped service is left stopped, unless the bundle wants
// it running, in which case it is started.
func (s *Service) Notify(ctx context.Context, env *states.Env) error {
	if s.runState(env).started || s.state == "stopped" {
		return nil
	}
	st, err := s.status(ctx, env)
	if err != nil {
		return err
	}
	// A unit file that changed after this run's check (the file resource that notified us ran
	// after it) must be loaded before the restart, or the old definition runs again.
	if st.stale {
		if err := systemctl(ctx, "daemon-reload", ""); err != nil {
			return err
		}
	}
	if !st.running {
		if s.state != "running" {
			return nil
		}
		if err := s.start(ctx, env); err != nil {
			return err
		}
		s.runState(env).started = true
		return nil
	}
	if useSystemd(env) {
		return systemctl(ctx, s.reload, s.unit())
	}
	if s.reload == "reload" {
		pid, ok := s.livePid()
		if !ok {
			return fmt.Errorf("service %s: not running, cannot reload", s.name)
		}
		return syscall.Kill(pid, syscall.SIGHUP)
	}
	if err := s.stop(ctx, env); err != nil {
		return err
	}
	return s.start(ctx, env)
}

func (s *Service) start(ctx context.Context, env *states.Env) error {
	if useSystemd(env) {
		return systemctl(ctx, "start", s.unit())
	}
	return s.startDaemon(ctx)
}

func (s *Service) stop(ctx context.Context, env *states.Env) error {
	if useSystemd(env) {
		return systemctl(ctx, "stop", s.unit())
	}
	return s.stopDaemon(ctx)
}

func (s *Service) enable(ctx context.Context, env *states.Env, on bool) error {
	if useSystemd(env) {
		if on {
			return systemctl(ctx, "enable", s.unit())
		}
		return systemctl(ctx, "disable", s.unit())
	}
	if !on {
		if err := os.Remove(s.bootPath()); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	return atomicfile.Write(s.bootPath(), s.bootScript(), 0o755)
}

// --- systemd ---

func (s *Service) unit() string {
	if strings.Contains(s.name, ".") {
		return s.name
	}
	return s.name + ".service"
}

// checkMasked refuses what a masked unit cannot do: run or be enabled. A masked unit that the
// bundle wants stopped or disabled is in sync.
func (s *Service) checkMasked(st serviceStatus) error {
	if !st.masked {
		return nil
	}
	if (s.state == "running" && !st.running) || (s.enabled != nil && *s.enabled) {
		return fmt.Errorf("service %s: unit %s is masked, so it cannot be started or enabled: unmask it (systemctl unmask %s) or remove the mask with a file resource", s.name, s.unit(), s.unit())
	}
	return nil
}

func (s *Service) systemdStatus(ctx context.Context) (serviceStatus, error) {
	cmd := exec.CommandContext(ctx, "systemctl", "show", "--property=LoadState,ActiveState,UnitFileState,NeedDaemonReload", "--", s.unit())
	out, err := cmd.Output()
	if err != nil {
		return serviceStatus{}, fmt.Errorf("systemctl show %s: %w", s.unit(), err)
	}
	props := map[string]string{}
	for _, l := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(l), "="); ok {
			props[k] = v
		}
	}
	if props["LoadState"] == "not-found" {
		return serviceStatus{}, fmt.Errorf("systemd has no unit %s (is the package that provides it installed?)", s.unit())
	}
	st := serviceStatus{stale: props["NeedDaemonReload"] == "yes"}
	if props["LoadState"] == "masked" || strings.HasPrefix(props["UnitFileState"], "masked") {
		st.masked = true
	}
	switch props["ActiveState"] {
	case "active", "reloading", "activating":
		st.running = true
	}
	switch props["UnitFileState"] {
	case "enabled", "enabled-runtime", "alias":
		st.enabled = true
	case "static", "generated", "transient", "indirect":
		st.fixed = true
	}
	return st, nil
}

// systemctl runs `systemctl VERB -- UNIT` (no unit for a verb such as daemon-reload).
func systemctl(ctx context.Context, verb, unit string) error {
	if unit == "" {
		return daemon.Systemctl(ctx, verb)
	}
	return daemon.Systemctl(ctx, verb, "--", unit)
}

// --- pidfile mode ---

func (s *Service) pidPath() string {
	if s.pidfile != "" {
		return s.pidfile
	}
	return filepath.Join(servicePidDir, s.name+".pid")
}

func (s *Service) logPath() string  { return filepath.Join(serviceLogDir, s.name+".log") }
func (s *Service) bootPath() string { return filepath.Join(serviceEnableDir, s.name) }

// livePid returns the pid in the pidfile when that process is alive (not a zombie) and its
// command line matches the service's command, so that a pid recycled by an unrelated process
// does not count as the service running.
func (s *Service) livePid() (int, bool) {
	return daemon.Live(s.pidPath(), func(cmdline []string) bool { return cmdlineMatches(cmdline, s.command) })
}

// cmdlineMatches reports whether a process command line belongs to a service started with
// command: it must mention the base name of the command's program (its first word that is not
// a VAR=value assignment or exec). That holds for the program itself ("sleep 1000"), for the
// /bin/sh -c wrapper running a script ("/bin/sh -c while true; ..."), and for daemons that
// rename themselves ("nginx: master process /usr/sbin/nginx").
func cmdlineMatches(cmdline []string, command string) bool {
	if len(cmdline) == 0 {
		return false
	}
	prog := ""
	for _, w := range strings.Fields(command) {
		if w == "exec" || (strings.Contains(w, "=") && !strings.HasPrefix(w, "=")) {
			continue
		}
		prog = filepath.Base(strings.Trim(w, `'"`))
		break
	}
	if prog == "" {
		return true // no command to compare with (a stop-only service): the pidfile is trusted
	}
	return strings.Contains(strings.Join(cmdline, " "), prog)
}

// startDaemon starts the command detached in its own session, output appended to the log, and
// waits until it runs with a pidfile: the daemon's own, or, for a daemon that stays in the
// foreground and writes none, one we write with its pid.
func (s *Service) startDaemon(ctx context.Context) error {
	if s.command == "" {
		return fmt.Errorf("service %s: no command to start it with", s.name)
	}
	for _, d := range []string{serviceLogDir, filepath.Dir(s.pidPath())} {
		if err := safepath.MkdirAll(d); err != nil {
			return err
		}
	}
	if err := safepath.Remove(s.pidPath()); err != nil {
		return err
	}
	logf, err := os.OpenFile(s.logPath(), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return err
	}
	fmt.Fprintf(logf, "=== brine: start %s at %s: %s\n", s.name, time.Now().UTC().Format(time.RFC3339), s.command)
	cmd := exec.Command("/bin/sh", "-c", s.command)
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	logf.Close()
	if err != nil {
		return fmt.Errorf("start %s: %w", s.name, err)
	}
	// Reap the child when it exits (else a dead daemon lingers as a zombie while brine runs).
	// The goroutine ends with the daemon or with brine.
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()

	start := time.Now()
	for {
		if _, ok := s.livePid(); ok {
			return nil
		}
		gone := false
		select {
		case <-exited:
			gone = true
			if waitErr != nil {
				return fmt.Errorf("service %s exited at start (%v)%s", s.name, waitErr, shell.OutputSuffix(s.logTail()))
			}
		default:
		}
		switch {
		case !gone && time.Since(start) >= serviceOwnPid:
			pid := []byte(strconv.Itoa(cmd.Process.Pid) + "\n")
			if err := atomicfile.Write(s.pidPath(), pid, 0o644); err != nil {
				return err
			}
			if _, ok := s.livePid(); ok {
				return nil
			}
		case time.Since(start) > serviceStartWait:
			return fmt.Errorf("service %s: not running with a pidfile %s after %s%s", s.name, s.pidPath(), serviceStartWait, shell.OutputSuffix(s.logTail()))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// stopDaemon sends SIGTERM (to the daemon's process group when it leads one), waits, then sends
// SIGKILL, and removes the pidfile.
func (s *Service) stopDaemon(ctx context.Context) error {
	pid, ok := s.livePid()
	if !ok {
		return nil
	}
	if err := daemon.Stop(ctx, s.name, pid, serviceStopWait); err != nil {
		return err
	}
	return safepath.Remove(s.pidPath())
}

func (s *Service) logTail() string {
	f, err := os.Open(s.logPath())
	if err != nil {
		return ""
	}
	defer f.Close()
	return shell.ReadTail(f)
}

// bootScript is the script an enabled pidfile-mode service leaves in /etc/brine/services: run at
// boot (by whatever runs the scripts of that directory), it starts the daemon as brine would,
// unless its pidfile names a live process.
func (s *Service) bootScript() []byte {
	q := shell.Quote
	return []byte(fmt.Sprintf(`#!/bin/sh
# Written by brine: service %[1]s is enabled. Run at boot to start it; brine rewrites or
# removes this file, edit the bundle instead.
pidfile=%[2]s
if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then exit 0; fi
rm -f "$pidfile"
mkdir -p %[3]s "$(dirname "$pidfile")"
cd /
setsid /bin/sh -c %[4]s >>%[5]s 2>&1 </dev/null &
pid=$!
sleep 1
[ -s "$pidfile" ] || echo "$pid" >"$pidfile"
`, s.name, q(s.pidPath()), q(serviceLogDir), q(s.command), q(s.logPath())))
}
