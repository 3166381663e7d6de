package capture

import (
	"context"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// iptTable is one table of iptables-save's output for one family.
type iptTable struct {
	chains []string            // in the order iptables-save lists them
	policy map[string]string   // built-in chain -> policy
	rules  map[string][]string // chain -> rule arguments (after "-A CHAIN "), in order
}

var builtinChains = map[string][]string{
	"filter":   {"INPUT", "FORWARD", "OUTPUT"},
	"nat":      {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"},
	"mangle":   {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"},
	"raw":      {"PREROUTING", "OUTPUT"},
	"security": {"INPUT", "FORWARD", "OUTPUT"},
}

// parseIptablesSave reads iptables-save output into tables.
func parseIptablesSave(out string) map[string]*iptTable {
	tables := map[string]*iptTable{}
	var cur *iptTable
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimRight(l, "\r")
		switch {
		case strings.HasPrefix(l, "*"):
			cur = &iptTable{policy: map[string]string{}, rules: map[string][]string{}}
			tables[l[1:]] = cur
		case cur == nil:
		case strings.HasPrefix(l, ":"):
			f := strings.Fields(l[1:])
			if len(f) >= 2 {
				cur.chains = append(cur.chains, f[0])
				if f[1] != "-" {
					cur.policy[f[0]] = f[1]
				}
			}
		case strings.HasPrefix(l, "-A "):
			chain, args, ok := strings.Cut(l[3:], " ")
			if ok {
				cur.rules[chain] = append(cur.rules[chain], args)
			}
		}
	}
	return tables
}

// ufwState is ufw's configuration as its files say.
type ufwState struct {
	enabled  bool
	logging  string
	defaults map[string]string // incoming|outgoing|routed -> allow|deny|reject
	ipv6     bool
	rules4   []string // tuples of user.rules
	rules6   []string
	sshPorts []string
}

// firewall is the host's iptables and ufw state.
type firewall struct {
	v4, v6 map[string]*iptTable
	ufw    *ufwState
}

func (c *capturer) readFirewall(ctx context.Context) *firewall {
	fw := &firewall{}
	for _, fam := range []struct {
		cmd string
		dst *map[string]*iptTable
	}{{"iptables-save", &fw.v4}, {"ip6tables-save", &fw.v6}} {
		if _, err := exec.LookPath(fam.cmd); err != nil {
			c.note("%s not found: no %s rules captured", fam.cmd, fam.cmd[:len(fam.cmd)-5])
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		out, err := exec.CommandContext(cctx, fam.cmd).Output()
		cancel()
		if err != nil {
			c.note("%s: %v: no rules captured", fam.cmd, err)
			continue
		}
		*fam.dst = parseIptablesSave(string(out))
	}
	fw.ufw = c.readUfw(fw.v4)
	return fw
}

// readUfw reads ufw's files; nil when ufw is not installed.
func (c *capturer) readUfw(v4 map[string]*iptTable) *ufwState {
	conf := shellVars(filepath.Join(c.root, "etc/ufw/ufw.conf"))
	if conf == nil {
		return nil
	}
	def := shellVars(filepath.Join(c.root, "etc/default/ufw"))
	st := &ufwState{defaults: map[string]string{}, logging: conf["LOGLEVEL"]}
	if st.logging == "" {
		st.logging = "off"
	}
	// Enabled is what ufw.conf says and whether its chains are loaded: the ufw resource's view.
	if strings.EqualFold(conf["ENABLED"], "yes") && v4 != nil && v4["filter"] != nil {
		st.enabled = slices.Contains(v4["filter"].chains, "ufw-user-input")
	}
	st.ipv6 = !strings.EqualFold(def["IPV6"], "no")
	names := map[string]string{"DROP": "deny", "ACCEPT": "allow", "REJECT": "reject"}
	for dir, key := range map[string]string{"incoming": "DEFAULT_INPUT_POLICY", "outgoing": "DEFAULT_OUTPUT_POLICY", "routed": "DEFAULT_FORWARD_POLICY"} {
		if v := names[def[key]]; v != "" {
			st.defaults[dir] = v
		}
	}
	st.rules4 = tuples(filepath.Join(c.root, "etc/ufw/user.rules"), filepath.Join(c.root, "lib/ufw/user.rules"))
	st.rules6 = tuples(filepath.Join(c.root, "etc/ufw/user6.rules"), filepath.Join(c.root, "lib/ufw/user6.rules"))
	st.sshPorts = sshdPorts(c.root)
	return st
}

func shellVars(p string) map[string]string {
	data, err := os.ReadFile(p)
	if err != nil {
		return nil
	}
	vars := map[string]string{}
	for _, l := range strings.Split(string(data), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || l[0] == '#' {
			continue
		}
		if k, v, ok := strings.Cut(l, "="); ok {
			vars[strings.TrimSpace(k)] = strings.Trim(strings.TrimSpace(v), `"'`)
		}
	}
	return vars
}

func tuples(paths ...string) []string {
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		var out []string
		for _, l := range strings.Split(string(data), "\n") {
			if t, ok := strings.CutPrefix(l, "### tuple ###"); ok {
				out = append(out, strings.Join(strings.Fields(t), " "))
			}
		}
		return out
	}
	return nil
}

// sshdPorts are the ports of sshd's Port lines, "22" when there is none.
func sshdPorts(root string) []string {
	files := []string{filepath.Join(root, "etc/ssh/sshd_config")}
	more, _ := filepath.Glob(filepath.Join(root, "etc/ssh/sshd_config.d/*.conf"))
	var ports []string
	for _, f := range append(files, more...) {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(data), "\n") {
			w := strings.Fields(l)
			if len(w) == 2 && strings.EqualFold(w[0], "Port") {
				ports = append(ports, w[1])
			}
		}
	}
	if len(ports) == 0 {
		ports = []string{"22"}
	}
	return ports
}

// ufwRule is a ufw rule read back from its tuple.
type ufwRule struct {
	action, proto, port, to, from, direction, iface, comment string
	v4only, v6only                                           bool
}

// ruleFromTuple reads a user.rules tuple ("allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in"); false for
// what the ufw resource cannot declare (application rules, source ports, route rules).
func ruleFromTuple(t string) (ufwRule, bool) {
	comment := ""
	if i := strings.Index(t, " comment="); i >= 0 {
		c, err := hex.DecodeString(strings.TrimSpace(t[i+len(" comment="):]))
		if err != nil {
			return ufwRule{}, false
		}
		comment, t = string(c), t[:i]
	}
	f := strings.Fields(t)
	if len(f) != 7 || f[4] != "any" || strings.HasPrefix(f[0], "route:") {
		return ufwRule{}, false
	}
	u := ufwRule{action: f[0], proto: f[1], port: f[2], to: f[3], from: f[5], comment: comment}
	u.direction, u.iface, _ = strings.Cut(f[6], "_")
	for _, p := range []*string{&u.to, &u.from} {
		switch {
		case *p == "0.0.0.0/0" || *p == "::/0":
			*p = "any"
		case strings.Contains(*p, ":"):
			u.v6only = true
		default:
			u.v4only = true
		}
	}
	return u, true
}

// ufwRules merges user.rules and user6.rules into one declared list whose v4 and v6 halves
// are exactly the two files (the ufw resource puts a rule without addresses in both).
// Tuples it cannot declare are returned apart.
func ufwRules(st *ufwState) (rules []ufwRule, skipped []string) {
	var r4, r6 []ufwRule
	for _, t := range st.rules4 {
		if u, ok := ruleFromTuple(t); ok {
			r4 = append(r4, u)
		} else {
			skipped = append(skipped, t)
		}
	}
	if st.ipv6 {
		for _, t := range st.rules6 {
			if u, ok := ruleFromTuple(t); ok {
				r6 = append(r6, u)
			} else {
				skipped = append(skipped, t)
			}
		}
	}
	i, j := 0, 0
	for i < len(r4) || j < len(r6) {
		switch {
		case j < len(r6) && r6[j].v6only:
			rules = append(rules, r6[j])
			j++
		case i < len(r4) && r4[i].v4only:
			rules = append(rules, r4[i])
			i++
		case i < len(r4) && j < len(r6) && r4[i] == r6[j]:
			rules = append(rules, r4[i])
			i++
			j++
		case i < len(r4) && !st.ipv6:
			rules = append(rules, r4[i])
			i++
		case i < len(r4):
			// An address-less rule in user.rules only: ufw would put it in both files. Keep it
			// and say so; the plan of the capture shows the difference.
			skipped = append(skipped, "(IPv4 only, without addresses) "+st.rules4[i])
			i++
		default:
			skipped = append(skipped, "(IPv6 only, without addresses) "+st.rules6[j])
			j++
		}
	}
	return rules, skipped
}

// allowsSSH says whether a rule lets incoming TCP reach one of ports.
func (u ufwRule) allowsSSH(ports []string) bool {
	if u.direction != "in" || (u.action != "allow" && u.action != "limit") || (u.proto != "tcp" && u.proto != "any") {
		return false
	}
	if u.port == "any" {
		return true
	}
	for _, p := range ports {
		for _, item := range strings.Split(u.port, ",") {
			lo, hi, isRange := strings.Cut(item, ":")
			if item == p || isRange && atoi(lo) <= atoi(p) && atoi(p) <= atoi(hi) {
				return true
			}
		}
	}
	return false
}

func atoi(s string) int {
	n := 0
	for _, ch := range s {
		if ch < '0' || ch > '9' {
			return -1
		}
		n = n*10 + int(ch-'0')
	}
	return n
}
