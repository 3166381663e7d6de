package apt

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/brinecm/brine/states"
	"github.com/brinecm/brine/states/resources/internal/shell"
)

// This file is the apt/dpkg side of the package resource: reading the dpkg database, asking
// apt-cache for candidate versions, and running apt-get.

// dpkgStatusPath is the dpkg database read by the package resource.
var dpkgStatusPath = "/var/lib/dpkg/status"

// dpkgPkg is one package as the dpkg database records it.
type dpkgPkg struct {
	Name    string
	Arch    string
	Version string
	Want    string // install, hold, deinstall, purge, unknown
	State   string // installed, config-files, half-installed, unpacked, half-configured, ...
}

// Installed reports whether the package is fully installed and configured.
func (p dpkgPkg) Installed() bool { return p.State == "installed" }

// Present reports whether any of the package is on the host (anything but "not-installed" or
// only its configuration files left).
func (p dpkgPkg) Present() bool {
	return p.State != "not-installed" && p.State != "config-files" && p.State != ""
}

// dpkgDB is a parsed dpkg status file: packages by name and by name:arch.
type dpkgDB map[string][]dpkgPkg

// lookup returns the entries for a package name, which may carry an architecture ("libc6:i386").
func (db dpkgDB) lookup(name string) []dpkgPkg {
	base, arch, hasArch := strings.Cut(name, ":")
	if !hasArch {
		return db[name]
	}
	var out []dpkgPkg
	for _, p := range db[base] {
		if p.Arch == arch || (arch == "any") {
			out = append(out, p)
		}
	}
	return out
}

// parseDpkgStatus parses the dpkg status format (RFC 822-like stanzas separated by blank lines).
// Only the fields the package resource needs are kept; continuation lines are skipped.
func parseDpkgStatus(r io.Reader) (dpkgDB, error) {
	db := dpkgDB{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var cur dpkgPkg
	flush := func() {
		if cur.Name != "" {
			db[cur.Name] = append(db[cur.Name], cur)
		}
		cur = dpkgPkg{}
	}
	for sc.Scan() {
		line := sc.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			flush()
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			continue
		}
		k, v, ok := bytes.Cut(line, []byte{':'})
		if !ok {
			continue
		}
		val := string(bytes.TrimSpace(v))
		switch string(k) {
		case "Package":
			cur.Name = val
		case "Architecture":
			cur.Arch = val
		case "Version":
			cur.Version = val
		case "Status":
			f := strings.Fields(val)
			if len(f) == 3 {
				cur.Want, cur.State = f[0], f[2]
			}
		}
	}
	flush()
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("parse %s: %w", dpkgStatusPath, err)
	}
	return db, nil
}

const dpkgCacheKey = "apt:dpkg-status"

// readDpkg returns the dpkg database, read once per run.
func readDpkg(env *states.Env) (dpkgDB, error) {
	v, err := env.Cached(dpkgCacheKey, func() (any, error) {
		f, err := os.Open(dpkgStatusPath)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		return parseDpkgStatus(f)
	})
	if err != nil {
		return nil, err
	}
	return v.(dpkgDB), nil
}

// aptPolicy is what apt-cache policy says of one package.
type aptPolicy struct {
	Installed string   // "" when not installed
	Candidate string   // "" when apt has none (unknown or purely virtual package)
	Versions  []string // every version apt knows, in apt's order (highest priority first)
}

// parseAptPolicy parses `apt-cache policy NAME...` output. Packages apt does not know are absent
// from the result.
func parseAptPolicy(out []byte) map[string]*aptPolicy {
	res := map[string]*aptPolicy{}
	var cur *aptPolicy
	inTable := false
	for _, line := range strings.Split(string(out), "\n") {
		if line == "" {
			continue
		}
		if line[0] != ' ' {
			// "name:" or "name:arch:" starts a package.
			name := strings.TrimSuffix(strings.TrimSpace(line), ":")
			cur, inTable = &aptPolicy{}, false
			res[name] = cur
			continue
		}
		if cur == nil {
			continue
		}
		t := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(t, "Installed:"):
			cur.Installed = noneToEmpty(strings.TrimSpace(strings.TrimPrefix(t, "Installed:")))
		case strings.HasPrefix(t, "Candidate:"):
			cur.Candidate = noneToEmpty(strings.TrimSpace(strings.TrimPrefix(t, "Candidate:")))
		case strings.HasPrefix(t, "Version table:"):
			inTable = true
		case inTable:
			// A version line is indented 5 (" *** " marks the installed one); its origins are
			// indented 8 and start with a priority number.
			indent := len(line) - len(strings.TrimLeft(line, " "))
			if strings.HasPrefix(line, " *** ") {
				t = strings.TrimSpace(line[5:])
				indent = 5
			}
			if indent <= 5 {
				if f := strings.Fields(t); len(f) >= 1 {
					cur.Versions = append(cur.Versions, f[0])
				}
			}
		}
	}
	return res
}

func noneToEmpty(s string) string {
	if s == "(none)" {
		return ""
	}
	return s
}

// aptPolicyKey caches apt-cache's answer for every package resource of the run, asked in one call
// by the first check (apt-cache loads the whole package cache on every start: about a second on a
// host with full Debian lists).
const aptPolicyKey = "apt:policy"

// aptPolicies is the run-scoped apt-cache answer; names asked later are fetched and added.
type aptPolicies struct {
	mu sync.Mutex
	m  map[string]*aptPolicy // guarded by mu; nil value: apt does not know the package
}

// policyFor returns apt-cache's view of name. The first call in a run asks about every package
// of the bundle at once.
func policyFor(ctx context.Context, env *states.Env, name string) (*aptPolicy, error) {
	v, err := env.Cached(aptPolicyKey, func() (any, error) {
		var names []string
		for _, r := range env.All() {
			if p, ok := r.(*Package); ok {
				names = append(names, p.name)
			}
		}
		m, err := aptCachePolicy(ctx, names)
		if err != nil {
			return nil, err
		}
		ps := &aptPolicies{m: map[string]*aptPolicy{}}
		for _, n := range names {
			ps.m[n] = m[n]
		}
		return ps, nil
	})
	if err != nil {
		return nil, err
	}
	ps := v.(*aptPolicies)
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if p, ok := ps.m[name]; ok {
		return p, nil
	}
	m, err := aptCachePolicy(ctx, []string{name})
	if err != nil {
		return nil, err
	}
	ps.m[name] = m[name]
	return m[name], nil
}

func aptCachePolicy(ctx context.Context, names []string) (map[string]*aptPolicy, error) {
	if len(names) == 0 {
		return map[string]*aptPolicy{}, nil
	}
	cmd := exec.CommandContext(ctx, "apt-cache", append([]string{"policy", "--"}, names...)...)
	cmd.Env = aptEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("apt-cache policy: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return parseAptPolicy(out), nil
}

func aptEnv() []string {
	return shell.MergeEnv(os.Environ(), map[string]string{
		"DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C", "APT_LISTCHANGES_FRONTEND": "none",
	})
}

// aptLockTimeout is how long apt-get waits, in all, for another process to release the dpkg lock.
// BRINE_APT_LOCK_TIMEOUT (a duration) overrides it.
var aptLockTimeout = 120 * time.Second

func lockTimeout() time.Duration {
	if s := os.Getenv("BRINE_APT_LOCK_TIMEOUT"); s != "" {
		if d, err := time.ParseDuration(s); err == nil && d >= 0 {
			return d
		}
	}
	return aptLockTimeout
}

// errDpkgLocked marks an apt-get run that gave up waiting for the dpkg lock.
var errDpkgLocked = errors.New("the dpkg database is locked by another process")

// aptGet runs `apt-get ARGS... -- PKGS...` non-interactively, keeping existing configuration
// files. When another process holds the dpkg lock, apt waits for it (DPkg::Lock::Timeout) and we
// retry until the lock timeout is spent, then fail with errDpkgLocked and apt's message.
func aptGet(ctx context.Context, args []string, pkgs []string) error {
	deadline := time.Now().Add(lockTimeout())
	for {
		wait := max(int(time.Until(deadline).Seconds()), 0)
		argv := append([]string{"-y", "-q",
			"-o", "Dpkg::Options::=--force-confold",
			"-o", "Dpkg::Options::=--force-confdef",
			"-o", fmt.Sprintf("DPkg::Lock::Timeout=%d", wait),
		}, args...)
		argv = append(argv, "--")
		argv = append(argv, pkgs...)
		cmd := exec.CommandContext(ctx, "apt-get", argv...)
		cmd.Env = aptEnv()
		out, err := cmd.CombinedOutput()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		msg := aptErrorLines(out)
		if isLockError(out) {
			if time.Now().Before(deadline) {
				time.Sleep(time.Second)
				continue
			}
			return fmt.Errorf("apt-get %s: %w (waited %s): %s", args[0], errDpkgLocked, lockTimeout(), msg)
		}
		return fmt.Errorf("apt-get %s %s: %v: %s", args[0], strings.Join(pkgs, " "), err, msg)
	}
}

func isLockError(out []byte) bool {
	return bytes.Contains(out, []byte("Could not get lock")) ||
		bytes.Contains(out, []byte("Unable to acquire the dpkg frontend lock")) ||
		bytes.Contains(out, []byte("Unable to lock the administration directory"))
}

// aptErrorLines picks what explains an apt-get failure from its output: dpkg's error lines (with
// the line after each, which says what failed), apt's E: lines, and the output of a failing
// maintainer script just before dpkg's error. It falls back to the output's tail.
func aptErrorLines(out []byte) string {
	lines := strings.Split(strings.TrimSpace(strings.ReplaceAll(string(out), "\r", "")), "\n")
	var keep []string
	for i, l := range lines {
		switch {
		case strings.HasPrefix(l, "dpkg: error"), strings.HasPrefix(l, "dpkg: dependency problems"):
			if i > 0 && !strings.HasPrefix(lines[i-1], "Setting up") && !strings.HasPrefix(lines[i-1], "dpkg:") &&
				!strings.HasPrefix(lines[i-1], "E:") && !strings.HasPrefix(lines[i-1], " ") {
				keep = append(keep, lines[i-1]) // what the maintainer script printed last
			}
			keep = append(keep, l)
			if i+1 < len(lines) {
				keep = append(keep, lines[i+1])
			}
		case strings.HasPrefix(l, "E: "):
			keep = append(keep, l)
		}
	}
	if len(keep) == 0 {
		if len(lines) > 8 {
			lines = lines[len(lines)-8:]
		}
		keep = lines
	}
	return strings.Join(dedupeLines(keep), "\n")
}

func dedupeLines(ss []string) []string {
	seen := map[string]bool{}
	out := ss[:0]
	for _, s := range ss {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
