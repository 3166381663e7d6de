package states

import (
	"bufio"
	"bytes"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

// Facts returns what brine knows about this host: os, os_version, arch, kernel, hostname, fqdn,
// addresses per interface, cpus, memory and what the resource types of types add (tinc_network:
// the tinc public keys, tinc_pubkey.NET), with extra (user-set facts from the config) on top.
func Facts(types *Registry, extra map[string]any) map[string]any {
	f := map[string]any{
		"arch": runtime.GOARCH,
		"cpus": runtime.NumCPU(),
	}
	// The typed facts are reported empty when this host's value is outside the type (a host
	// name of "(none)", an os-release value with a space): the master refuses a whole report
	// that holds one.
	word := func(s string) string { return keepIf(s, FactWord) }
	osr := readOSRelease("/etc/os-release")
	f["os"] = word(osr["ID"])
	f["os_version"] = word(osr["VERSION_ID"])
	f["os_name"] = osr["PRETTY_NAME"]
	var u syscall.Utsname
	if syscall.Uname(&u) == nil {
		f["kernel"] = word(utsString(u.Release[:]))
	}
	host, _ := os.Hostname()
	f["hostname"] = keepIf(host, FactHostName)
	f["fqdn"] = keepIf(fqdn(host), FactHostName)
	f["memory_mb"] = memTotalMB()
	ifaces := map[string]any{}
	var v4, v6 []string
	if list, err := net.Interfaces(); err == nil {
		for _, ifc := range list {
			addrs, _ := ifc.Addrs()
			var a4, a6 []string
			for _, a := range addrs {
				ipn, ok := a.(*net.IPNet)
				if !ok {
					continue
				}
				if ipn.IP.To4() != nil {
					a4 = append(a4, ipn.IP.String())
				} else {
					a6 = append(a6, ipn.IP.String())
				}
			}
			if a4 == nil {
				a4 = []string{}
			}
			if a6 == nil {
				a6 = []string{}
			}
			if FactIfaceName(ifc.Name) { // else left out (its addresses are in ipv4/ipv6): the master refuses a name outside the type
				ifaces[ifc.Name] = map[string]any{"ipv4": a4, "ipv6": a6, "mac": ifc.HardwareAddr.String()}
			}
			if ifc.Flags&net.FlagLoopback == 0 {
				v4 = append(v4, a4...)
				v6 = append(v6, a6...)
			}
		}
	}
	if v4 == nil {
		v4 = []string{}
	}
	if v6 == nil {
		v6 = []string{}
	}
	f["interfaces"] = ifaces
	f["ipv4"] = v4
	f["ipv6"] = v6
	// What the types know of this host (the public keys of its tinc networks, so that peers()
	// can carry them to the others).
	for _, n := range types.Names() {
		if t := types.Lookup(n); t.Facts != nil {
			for k, v := range t.Facts() {
				f[k] = v
			}
		}
	}
	for k, v := range extra {
		f[k] = v
	}
	return f
}

func utsString(b []int8) string {
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		out = append(out, byte(c))
	}
	return string(out)
}

func readOSRelease(p string) map[string]string {
	out := map[string]string{}
	data, err := os.ReadFile(p)
	if err != nil {
		return out
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		if uq, err := strconv.Unquote(v); err == nil {
			v = uq
		} else if len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'' {
			v = v[1 : len(v)-1] // os-release(5) allows single quotes too
		}
		out[k] = v
	}
	return out
}

// fqdn looks the host name up in /etc/hosts only: a DNS query could hang a minion's start.
func fqdn(host string) string {
	data, err := os.ReadFile("/etc/hosts")
	if err != nil {
		return host
	}
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(strings.SplitN(line, "#", 2)[0])
		if len(fields) < 2 {
			continue
		}
		for _, name := range fields[1:] {
			if name == host || strings.HasPrefix(name, host+".") {
				for _, n := range fields[1:] {
					if strings.HasPrefix(n, host+".") {
						return n
					}
				}
			}
		}
	}
	return host
}

func memTotalMB() int {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "MemTotal:") {
			fs := strings.Fields(line)
			if len(fs) >= 2 {
				kb, _ := strconv.Atoi(fs[1])
				return kb / 1024
			}
		}
	}
	return 0
}

// FactIfaceName reports whether name may be an interface's name in the facts (interfaces.NAME):
// 1 to 15 letters, digits and '_', '.', '@' or '-', not "." or "..". Linux takes more (any byte
// but '/', ':' and white space), but a name in the facts reaches other hosts' files through
// peers(), so it is a word: the names udev, systemd, Docker, WireGuard and tinc give all are.
func FactIfaceName(name string) bool {
	if name == "" || len(name) > 15 || name == "." || name == ".." {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !alnum(c) && c != '_' && c != '.' && c != '@' && c != '-' {
			return false
		}
	}
	return true
}

func keepIf(s string, ok func(string) bool) string {
	if ok(s) {
		return s
	}
	return ""
}

// FactWord reports whether s may be the value of a one-word fact (os, os_version, arch, kernel):
// at most 64 letters, digits and '.', '_', '+', '~', ':' or '-' (empty too).
func FactWord(s string) bool {
	if len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !alnum(c) && !strings.ContainsRune("._+~:-", rune(c)) {
			return false
		}
	}
	return true
}

// FactHostName reports whether s may be the hostname or fqdn in the facts: empty, or labels of
// letters, digits, '-' and '_' ('-' neither first nor last), at most 64 bytes each (Linux's
// HOST_NAME_MAX) and 253 in all, separated by dots, with an optional dot at the end.
func FactHostName(s string) bool { return s == "" || hostName(s, 64, "_") }

// hostName reports whether s is a host name of at most 253 bytes: dot-separated labels of 1 to
// label letters, digits, '-' and the bytes of extra, '-' neither first nor last, and an optional
// dot at the end.
func hostName(s string, label int, extra string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(strings.TrimSuffix(s, "."), ".") {
		if l == "" || len(l) > label || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			if c := l[i]; !alnum(c) && c != '-' && !strings.ContainsRune(extra, rune(c)) {
				return false
			}
		}
	}
	return true
}

func alnum(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' }
