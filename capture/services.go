package capture

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// service is a systemd service that is enabled, running, or both.
type service struct {
	name    string // unit name without ".service"
	enabled bool
	running bool
}

// skippedServices are units that belong to the system itself, not to what runs on it.
var skippedServices = []string{"systemd-*", "getty@*", "serial-getty@*", "user@*", "user-runtime-dir@*",
	"dbus", "dbus-*", "console-*", "keyboard-setup", "e2scrub_reap"}

// readServices lists enabled and running services where PID 1 is systemd; elsewhere it notes
// why there are none.
func (c *capturer) readServices(ctx context.Context) []service {
	if _, err := os.Stat(filepath.Join(c.root, "run/systemd/system")); err != nil {
		c.note("services: PID 1 is not systemd (no /run/systemd/system), so no services were captured; declare the daemons this host runs with service blocks (command, pidfile)")
		return nil
	}
	run := func(args ...string) (string, bool) {
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		out, err := exec.CommandContext(cctx, "systemctl", args...).Output()
		if err != nil {
			c.note("services: systemctl %s: %v", strings.Join(args, " "), err)
			return "", false
		}
		return string(out), true
	}
	enabled, ok1 := run("list-unit-files", "--type=service", "--state=enabled", "--no-legend", "--no-pager")
	running, ok2 := run("list-units", "--type=service", "--state=running", "--no-legend", "--no-pager", "--plain")
	if !ok1 || !ok2 {
		return nil
	}
	return parseServices(enabled, running)
}

// parseServices merges `systemctl list-unit-files --state=enabled` and `systemctl list-units
// --state=running` output. Template units (foo@.service) are left out: their instances are
// listed as running.
func parseServices(enabled, running string) []service {
	byName := map[string]*service{}
	get := func(unit string) *service {
		name, ok := strings.CutSuffix(unit, ".service")
		if !ok || strings.HasSuffix(name, "@") {
			return nil
		}
		for _, pat := range skippedServices {
			if m, _ := filepath.Match(pat, name); m {
				return nil
			}
		}
		s := byName[name]
		if s == nil {
			s = &service{name: name}
			byName[name] = s
		}
		return s
	}
	for _, l := range strings.Split(enabled, "\n") {
		if f := strings.Fields(strings.TrimLeft(l, "● ")); len(f) >= 2 && f[1] == "enabled" {
			if s := get(f[0]); s != nil {
				s.enabled = true
			}
		}
	}
	for _, l := range strings.Split(running, "\n") {
		if f := strings.Fields(strings.TrimLeft(l, "● ")); len(f) >= 4 && f[3] == "running" {
			if s := get(f[0]); s != nil {
				s.running = true
			}
		}
	}
	out := make([]service, 0, len(byName))
	for _, s := range byName {
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}
