package testbed

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// StopTimeout is how long Daemon.Stop waits after SIGTERM before SIGKILL.
var StopTimeout = 10 * time.Second

// Daemon is a long-running process in a host, its output appended to a log
// file on the machine.
type Daemon struct {
	h       *Host
	name    string
	argv    []string
	logPath string

	mu     sync.Mutex // guards cmd, exited, err
	cmd    *exec.Cmd  // nsenter; its only child is the daemon
	exited chan struct{}
	err    error // how the last run ended
}

// Start starts argv as a daemon called name in the host. Its stdout and
// stderr go to a log file (Log, LogPath); it runs until stopped, killed,
// or the cluster is closed.
func (h *Host) Start(name string, argv ...string) (*Daemon, error) {
	if len(argv) == 0 {
		return nil, errors.New("testbed: Start: empty command")
	}
	if !hostNameRE.MatchString(name) {
		return nil, fmt.Errorf("testbed: bad daemon name %q", name)
	}
	d := &Daemon{
		h:       h,
		name:    name,
		argv:    argv,
		logPath: filepath.Join(h.c.st.Dir, "logs", h.st.Name+"."+name+".log"),
	}
	if err := d.start(); err != nil {
		return nil, err
	}
	h.mu.Lock()
	h.daemons = append(h.daemons, d)
	h.mu.Unlock()
	return d, nil
}

// Daemons returns the daemons started in the host by this process.
func (h *Host) Daemons() []*Daemon {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*Daemon(nil), h.daemons...)
}

func (d *Daemon) start() error {
	if !d.h.Alive() {
		return fmt.Errorf("testbed: host %s is not running", d.h.st.Name)
	}
	f, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("testbed: daemon %s: %w", d.name, err)
	}
	defer f.Close()
	fmt.Fprintf(f, "=== testbed: start %s on %s at %s: %q\n", d.name, d.h.st.Name, time.Now().Format(time.RFC3339Nano), d.argv)
	cmd := d.h.Command(context.Background(), d.argv...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("testbed: start daemon %s on %s: %w", d.name, d.h.st.Name, err)
	}
	exited := make(chan struct{})
	d.mu.Lock()
	d.cmd, d.exited, d.err = cmd, exited, nil
	d.mu.Unlock()
	go func() {
		err := cmd.Wait()
		if code, e := exitStatus(err); e == nil && code != 0 {
			err = fmt.Errorf("daemon %s on %s exited with status %d", d.name, d.h.st.Name, code)
		}
		d.mu.Lock()
		d.err = err
		d.mu.Unlock()
		if f, ferr := os.OpenFile(d.logPath, os.O_WRONLY|os.O_APPEND, 0); ferr == nil {
			fmt.Fprintf(f, "=== testbed: %s exited at %s: %v\n", d.name, time.Now().Format(time.RFC3339Nano), errOr(err, "status 0"))
			f.Close()
		}
		close(exited)
	}()
	return nil
}

func errOr(err error, s string) string {
	if err != nil {
		return err.Error()
	}
	return s
}

// Name returns the daemon's name.
func (d *Daemon) Name() string { return d.name }

// Exited returns a channel closed when the current run of the daemon ends
// (for whatever reason: it exited, was killed inside the host, or stopped).
// After Restart it returns the channel of the new run.
func (d *Daemon) Exited() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.exited
}

// Running reports whether the current run has not ended.
func (d *Daemon) Running() bool {
	select {
	case <-d.Exited():
		return false
	default:
		return true
	}
}

// Err returns how the last run ended: nil while running or after exit
// status 0, otherwise the exit status or signal.
func (d *Daemon) Err() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.err
}

// Pid returns the machine's pid of the daemon process, or 0 if it is not
// running.
func (d *Daemon) Pid() int {
	d.mu.Lock()
	cmd := d.cmd
	d.mu.Unlock()
	if cmd == nil || !d.Running() {
		return 0
	}
	// nsenter forks once to enter the PID namespace: the daemon is its child.
	for i := 0; i < 100; i++ {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid))
		if err != nil {
			return 0
		}
		if f := strings.Fields(string(b)); len(f) > 0 {
			pid, _ := strconv.Atoi(f[0])
			return pid
		}
		time.Sleep(5 * time.Millisecond)
	}
	return 0
}

// signal sends sig to the daemon itself (so that nsenter reports how it
// ended), or to its whole process group if it cannot be found.
func (d *Daemon) signal(sig syscall.Signal) {
	if pid := d.Pid(); pid > 0 {
		syscall.Kill(pid, sig)
		return
	}
	d.mu.Lock()
	cmd := d.cmd
	d.mu.Unlock()
	if cmd != nil {
		syscall.Kill(-cmd.Process.Pid, sig)
	}
}

// Stop sends SIGTERM to the daemon, waits up to StopTimeout for it to end,
// then kills it. Stopping a daemon that already ended is not an error.
func (d *Daemon) Stop() error {
	if !d.Running() {
		return nil
	}
	exited := d.Exited()
	d.signal(syscall.SIGTERM)
	select {
	case <-exited:
		d.killGroup()
		return nil
	case <-time.After(StopTimeout):
	}
	return d.Kill()
}

// Kill sends SIGKILL to the daemon and waits until it is gone.
func (d *Daemon) Kill() error {
	exited := d.Exited()
	if !d.Running() {
		return nil
	}
	d.signal(syscall.SIGKILL)
	select {
	case <-exited:
	case <-time.After(2 * time.Second):
		d.killGroup()
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			return fmt.Errorf("testbed: daemon %s on %s survives SIGKILL", d.name, d.h.st.Name)
		}
	}
	d.killGroup()
	return nil
}

// killGroup kills what the daemon left in its process group.
func (d *Daemon) killGroup() {
	d.mu.Lock()
	cmd := d.cmd
	d.mu.Unlock()
	if cmd != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}

// Restart stops the daemon if it runs and starts it again with the same
// command, appending to the same log.
func (d *Daemon) Restart() error {
	if err := d.Stop(); err != nil {
		return err
	}
	return d.start()
}

// Log returns everything the daemon wrote so far, across restarts.
func (d *Daemon) Log() string {
	b, _ := os.ReadFile(d.logPath)
	return string(b)
}

// LogPath returns the path of the daemon's log file on the machine.
func (d *Daemon) LogPath() string { return d.logPath }

// killDaemons kills the host's daemons without waiting; Close follows up by
// killing the host's PID 1, which takes every process of the host with it.
func (h *Host) killDaemons() {
	for _, d := range h.Daemons() {
		if d.Running() {
			d.killGroup()
		}
	}
}
