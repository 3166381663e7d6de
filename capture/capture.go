// Package capture reads a running Debian host and writes a bundle that reproduces it: the
// packages installed by hand, the services enabled and running, the configuration under /etc
// that differs from what the packages ship or that no package owns, iptables chains, ufw rules,
// and the users and groups that are not system ones. Secrets (private keys) are never copied:
// they become secret("...") references. Host-specific values (the host name, addresses) become
// variables whose default is the host's own value, from its facts.
//
// Capture runs on the host being captured and returns the bundle in memory (Result.Files), so
// that a master can have a minion capture itself and ship the result back; WriteDir writes it
// out for `brine local capture --out DIR`.
package capture

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/brinecm/brine/internal/atomicfile"
	"github.com/brinecm/brine/states"
)

// Default limits of a capture.
const (
	DefaultMaxFileSize = 256 << 10
	DefaultMaxFiles    = 2000
)

// Options say what to capture and how.
type Options struct {
	// Root is the file system root to read (the dpkg database, /etc); "" means "/". Commands
	// (iptables-save, systemctl) always run on the live host.
	Root string
	// MaxFileSize is the size above which a file under /etc is left out (with a note), 256 KiB
	// when zero. MaxFiles bounds how many files are captured, 2,000 when zero.
	MaxFileSize int64
	MaxFiles    int
	// Exclude adds path.Match patterns to DefaultExcludes (a trailing "/" names a directory).
	Exclude []string
	// Hostname is the host's name, os.Hostname() when empty.
	Hostname string
	// Interfaces maps interface names to their addresses; nil means the host's own.
	Interfaces []Interface
	// NoFirewall and NoServices leave out iptables/ufw and services (for tests on a shared host).
	NoFirewall bool
	NoServices bool
}

// Interface is a network interface of the captured host and its addresses.
type Interface struct {
	Name string
	// Physical is true for an interface with a hardware address: its addresses come from the
	// host it is applied to (its facts); those of virtual interfaces (tinc, WireGuard) are
	// configuration and keep the captured value.
	Physical bool
	IPv4     []string
	IPv6     []string
}

// Result is a captured bundle.
type Result struct {
	// Files are the bundle's files by slash-separated path relative to the bundle root.
	Files map[string][]byte
	// Summary counts what was captured; Notes lists what was left out and why.
	Summary Summary
}

// Summary counts what a capture holds.
type Summary struct {
	Host       string        `json:"host"`
	Packages   int           `json:"packages"`
	Files      int           `json:"files"`
	Templates  int           `json:"templates"`
	Links      int           `json:"links"`
	Secrets    []string      `json:"secrets"`
	Services   int           `json:"services"`
	Users      int           `json:"users"`
	Groups     int           `json:"groups"`
	Chains     int           `json:"iptables_chains"`
	UfwRules   int           `json:"ufw_rules"`
	Bytes      int           `json:"bytes"`
	Notes      []string      `json:"notes"`
	DurationNS time.Duration `json:"duration_ns"`
}

type capturer struct {
	opts     Options
	root     string
	excludes []string
	db       *dpkgDB
	ids      *idMap
	host     *hostValues
	notes    []string
	out      map[string][]byte
}

func (c *capturer) note(format string, args ...any) {
	c.notes = append(c.notes, fmt.Sprintf(format, args...))
}

// hostPath turns a path under root into the path on the host.
func (c *capturer) hostPath(full string) string {
	rel, err := filepath.Rel(c.root, full)
	if err != nil {
		return full
	}
	return "/" + filepath.ToSlash(rel)
}

// Capture reads this host and returns a bundle that reproduces it.
func Capture(ctx context.Context, opts Options) (*Result, error) {
	start := time.Now()
	if opts.Root == "" {
		opts.Root = "/"
	}
	if opts.MaxFileSize <= 0 {
		opts.MaxFileSize = DefaultMaxFileSize
	}
	if opts.MaxFiles <= 0 {
		opts.MaxFiles = DefaultMaxFiles
	}
	if opts.Hostname == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("capture: host name: %w", err)
		}
		opts.Hostname = h
	}
	if opts.Interfaces == nil {
		opts.Interfaces = hostInterfaces()
	}
	c := &capturer{opts: opts, root: opts.Root, out: map[string][]byte{},
		excludes: append(append([]string{}, DefaultExcludes...), opts.Exclude...)}
	var err error
	if c.db, err = readDpkg(c.root); err != nil {
		return nil, fmt.Errorf("capture: %w", err)
	}
	c.ids = readIDs(c.root)
	c.host = newHostValues(opts.Hostname, opts.Interfaces)
	files, err := c.walkEtc()
	if err != nil {
		return nil, fmt.Errorf("capture: /etc: %w", err)
	}
	users, groups := c.readUsers()
	var fw *firewall
	if !opts.NoFirewall {
		fw = c.readFirewall(ctx)
	}
	var services []service
	if !opts.NoServices {
		services = c.readServices(ctx)
	}
	res := &Result{Files: c.out}
	c.emit(files, users, groups, fw, services, &res.Summary)
	if err := checkNoKeyMaterial(c.out); err != nil {
		return nil, err
	}
	res.Summary.Host = opts.Hostname
	res.Summary.Notes = c.notes
	res.Summary.DurationNS = time.Since(start)
	for _, b := range c.out {
		res.Summary.Bytes += len(b)
	}
	return res, ctx.Err()
}

// checkNoKeyMaterial is the last guard: no file of a capture may hold a private key block,
// whatever path it came by.
func checkNoKeyMaterial(files map[string][]byte) error {
	for p, b := range files {
		if secretReason("/"+p, b) == "it holds a private key" {
			return fmt.Errorf("capture: %s would hold private key material: refusing to write the capture", p)
		}
	}
	return nil
}

// WriteDir writes the bundle into dir, which must not exist or be empty. The directory is
// private (0700): configuration files can hold passwords that no rule recognises.
func (r *Result) WriteDir(dir string) error { return WriteFiles(dir, r.Files) }

// WriteFiles writes files (slash-separated paths relative to dir) into dir, which must not
// exist or be empty, private (0700, files 0600). A path that is absolute or leaves dir, or a
// file that holds a private key block, stops it before anything is written: `brine capture`
// writes with it what minions sent.
func WriteFiles(dir string, files map[string][]byte) error {
	if err := checkFiles(files); err != nil {
		return err
	}
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		return fmt.Errorf("capture: %s is not empty", dir)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("capture: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("capture: %w", err)
	}
	for _, p := range sortedPaths(files) {
		if err := writeNew(dir, p, files[p]); err != nil {
			return err
		}
	}
	return nil
}

// WriteInto writes the site tree files (Split of captures into the site old) into dir, which
// holds old: the files old has with the same contents are left alone, every other file is
// created and must not exist yet (nothing is overwritten), and the site file, which may
// differ, is replaced last and atomically, so the site assigns the new bundles only once they
// are all written. The checks of WriteFiles come first.
func WriteInto(dir string, files, old map[string][]byte) error {
	site, ok := files[states.SiteFile]
	if !ok {
		return fmt.Errorf("capture: the tree has no %s", states.SiteFile)
	}
	add := map[string][]byte{}
	for p, data := range files {
		if o, ok := old[p]; p != states.SiteFile && (!ok || !bytes.Equal(o, data)) {
			add[p] = data
		}
	}
	if err := checkFiles(add); err != nil {
		return err
	}
	for _, p := range sortedPaths(add) {
		if err := writeNew(dir, p, add[p]); err != nil {
			return err
		}
	}
	if err := atomicfile.Write(filepath.Join(dir, states.SiteFile), site, 0o600); err != nil {
		return fmt.Errorf("capture: %w", err)
	}
	return nil
}

// checkFiles refuses a path that is absolute or leaves the directory and a file that holds a
// private key block.
func checkFiles(files map[string][]byte) error {
	if err := checkNoKeyMaterial(files); err != nil {
		return err
	}
	for p := range files {
		clean := path.Clean(p)
		if p == "" || strings.ContainsRune(p, 0) || path.IsAbs(clean) || clean == "." || clean == ".." || strings.HasPrefix(clean, "../") {
			return fmt.Errorf("capture: bad path %q in the bundle", p)
		}
	}
	return nil
}

func sortedPaths(files map[string][]byte) []string {
	names := make([]string, 0, len(files))
	for p := range files {
		names = append(names, p)
	}
	sort.Strings(names)
	return names
}

// writeNew creates the file p (checked by checkFiles) under dir, private; it must not exist.
func writeNew(dir, p string, data []byte) error {
	full := filepath.Join(dir, filepath.FromSlash(path.Clean(p)))
	if err := os.MkdirAll(filepath.Dir(full), 0o700); err != nil {
		return fmt.Errorf("capture: %w", err)
	}
	f, err := os.OpenFile(full, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("capture: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("capture: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("capture: %w", err)
	}
	return nil
}

// hostInterfaces lists this host's interfaces with their addresses, loopback and link-local
// addresses left out.
func hostInterfaces() []Interface {
	list, err := net.Interfaces()
	if err != nil {
		return []Interface{}
	}
	out := []Interface{}
	for _, ifc := range list {
		if ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		it := Interface{Name: ifc.Name, Physical: len(ifc.HardwareAddr) > 0}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok || ipn.IP.IsLinkLocalUnicast() || ipn.IP.IsLoopback() {
				continue
			}
			if ipn.IP.To4() != nil {
				it.IPv4 = append(it.IPv4, ipn.IP.String())
			} else {
				it.IPv6 = append(it.IPv6, ipn.IP.String())
			}
		}
		if len(it.IPv4)+len(it.IPv6) > 0 {
			out = append(out, it)
		}
	}
	return out
}

// debArch is Debian's name of the architecture this binary runs on.
func debArch() string {
	switch runtime.GOARCH {
	case "386":
		return "i386"
	case "arm":
		return "armhf"
	case "ppc64le":
		return "ppc64el"
	}
	return runtime.GOARCH
}

// hostValues are the host-specific strings that become variables.
type hostValues struct {
	vars []hostVar // longest value first, so that a value inside another is not taken first
}

type hostVar struct {
	name, value string
	fromFacts   string // the facts expression for the default, or "" (the captured value)
	used        bool
}

func newHostValues(hostname string, ifaces []Interface) *hostValues {
	h := &hostValues{}
	if len(hostname) >= 3 && hostname != "localhost" {
		h.vars = append(h.vars, hostVar{name: "hostname", value: hostname, fromFacts: "minion.facts.hostname"})
	}
	for _, it := range ifaces {
		id := identifier(it.Name)
		for fam, addrs := range map[string][]string{"ipv4": it.IPv4, "ipv6": it.IPv6} {
			if len(addrs) == 0 {
				continue
			}
			v := hostVar{name: fam + "_" + id, value: addrs[0]}
			if it.Physical {
				v.fromFacts = fmt.Sprintf("try(minion.facts.interfaces[%s].%s[0], \"\")", quote(it.Name), fam)
			}
			h.vars = append(h.vars, v)
		}
	}
	sort.SliceStable(h.vars, func(i, j int) bool {
		if len(h.vars[i].value) != len(h.vars[j].value) {
			return len(h.vars[i].value) > len(h.vars[j].value)
		}
		return h.vars[i].name < h.vars[j].name
	})
	return h
}

// identifier makes an HCL identifier of s.
func identifier(s string) string {
	b := []byte(s)
	for i, ch := range b {
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '_') {
			b[i] = '_'
		}
	}
	if len(b) == 0 || b[0] >= '0' && b[0] <= '9' {
		return "_" + string(b)
	}
	return string(b)
}

// wordByte says whether ch continues a host name or an address, so that "10.0.0.5" is not
// found inside "10.0.0.55" nor "web1" inside "web10". A colon continues only an IPv6 address:
// "10.0.0.5:80" names the address.
func wordByte(ch byte, v6 bool) bool {
	return ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '_' || ch == '-' || v6 && ch == ':'
}

// bounded reports whether s[i:end], equal to value, stands alone.
func bounded(s string, i, end int, value string) bool {
	v6 := strings.Contains(value, ":")
	if i > 0 && (wordByte(s[i-1], v6) || s[i-1] == '.' && i > 1 && isDigit(s[i-2]) && isDigit(value[0])) {
		return false
	}
	if end < len(s) && (wordByte(s[end], v6) || s[end] == '.' && end+1 < len(s) && isDigit(s[end+1]) && isDigit(value[len(value)-1])) {
		return false
	}
	return true
}

// split cuts s into literal text and host values: parts[i] is literal when vars[i] is nil.
type part struct {
	text string
	v    *hostVar
}

func (h *hostValues) split(s string) []part {
	var parts []part
	lit := 0
	for i := 0; i < len(s); {
		var hit *hostVar
		for k := range h.vars {
			v := &h.vars[k]
			if !strings.HasPrefix(s[i:], v.value) {
				continue
			}
			if !bounded(s, i, i+len(v.value), v.value) {
				continue
			}
			hit = v
			break
		}
		if hit == nil {
			i++
			continue
		}
		if lit < i {
			parts = append(parts, part{text: s[lit:i]})
		}
		hit.used = true
		parts = append(parts, part{text: hit.value, v: hit})
		i += len(hit.value)
		lit = i
	}
	if lit < len(s) {
		parts = append(parts, part{text: s[lit:]})
	}
	return parts
}

func isDigit(ch byte) bool { return ch >= '0' && ch <= '9' }

// hasHostValue reports whether s mentions a host value.
func hasHostValue(parts []part) bool {
	for _, p := range parts {
		if p.v != nil {
			return true
		}
	}
	return false
}

// escapeTemplate escapes HCL template sequences in literal text.
func escapeTemplate(s string) string {
	s = strings.ReplaceAll(s, "${", "$${")
	return strings.ReplaceAll(s, "%{", "%%{")
}

// template renders parts as an HCL template: literal text escaped, host values as ${prefix+name}.
func template(parts []part, prefix string) string {
	var b bytes.Buffer
	for _, p := range parts {
		if p.v == nil {
			b.WriteString(escapeTemplate(p.text))
			continue
		}
		b.WriteString("${" + prefix + p.v.name + "}")
	}
	return b.String()
}
