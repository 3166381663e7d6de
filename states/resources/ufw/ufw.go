package ufw

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/brinecm/brine/internal/lazyre"
	"github.com/brinecm/brine/states"
	"github.com/brinecm/brine/states/resources/internal/textdiff"
	"github.com/brinecm/brine/states/resources/iptables"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
)

// ufw is a singleton: the ufw block owns the host's whole ufw configuration. Its check reads
// ufw's own files (ufw.conf, /etc/default/ufw, user.rules, user6.rules) and never runs ufw, a
// Python program that takes a few hundred milliseconds to start; only a change runs it.

// Type is the `ufw` resource type: the host's whole ufw configuration (policies and rules), one block per host, merged across bundles.
var Type = &states.Type{Name: "ufw", Labels: 0, Decode: decodeUfw, Merge: mergeUfw}

// ufwRoot prefixes every path ufw reads, for tests.
var ufwRoot = ""

type ufwConfig struct {
	DefaultIncoming string         `hcl:"default_incoming,optional"`
	DefaultOutgoing string         `hcl:"default_outgoing,optional"`
	DefaultRouted   string         `hcl:"default_routed,optional"`
	Logging         string         `hcl:"logging,optional"`
	Enabled         *bool          `hcl:"enabled,optional"`
	AllowLockout    bool           `hcl:"allow_lockout,optional"`
	Rules           []ufwRuleBlock `hcl:"rule,block"`
	// allow "ssh" { ... } is short for rule "ssh" { action = "allow", ... }; likewise deny,
	// reject and limit. All rule blocks keep their order of declaration.
	Allow  []ufwRuleBlock `hcl:"allow,block"`
	Deny   []ufwRuleBlock `hcl:"deny,block"`
	Reject []ufwRuleBlock `hcl:"reject,block"`
	Limit  []ufwRuleBlock `hcl:"limit,block"`
}

type ufwRuleBlock struct {
	Name      string `hcl:"name,label"`
	Action    string `hcl:"action,optional"`
	Port      string `hcl:"port,optional"`
	Proto     string `hcl:"proto,optional"`
	From      string `hcl:"from,optional"`
	To        string `hcl:"to,optional"`
	Interface string `hcl:"interface,optional"`
	Direction string `hcl:"direction,optional"`
	Comment   string `hcl:"comment,optional"`
}

// ufwRule is one declared rule in ufw's own terms.
type ufwRule struct {
	name      string
	action    string // allow deny reject limit
	proto     string // any tcp udp ...
	port      string // "any", "22", "6000:6007", "80,443"
	from, to  string // "any" or a canonical address / network
	iface     string
	direction string // in out
	comment   string
	v4, v6    bool // which rule files it belongs in (before IPV6=no is applied)
	rng       hcl.Range
}

type ufwRes struct {
	defaults     map[string]string // incoming/outgoing/routed -> allow|deny|reject; unset ones are left alone
	logging      string
	enabled      *bool
	allowLockout bool
	rules        []ufwRule
}

var (
	ufwPolicies = []string{"allow", "deny", "reject"}
	ufwLevels   = []string{"off", "low", "medium", "high", "full"}
	ufwActions  = []string{"allow", "deny", "reject", "limit"}
	ufwProtos   = []string{"any", "tcp", "udp", "ah", "esp", "gre", "ipv6", "igmp"}
	ufwPortRE   = lazyre.New(`^[0-9]{1,5}(:[0-9]{1,5})?(,[0-9]{1,5}(:[0-9]{1,5})?)*$`)
	ufwIfaceRE  = lazyre.New(`^[A-Za-z0-9_.-]{1,15}$`)
)

func decodeUfw(req *states.DecodeRequest) (states.Resource, hcl.Diagnostics) {
	var cfg ufwConfig
	diags := gohcl.DecodeBody(req.Body, req.Ctx, &cfg)
	if diags.HasErrors() {
		return nil, diags
	}
	content, _, _ := req.Body.PartialContent(&hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{{Name: "default_incoming"}, {Name: "default_outgoing"}, {Name: "default_routed"}, {Name: "logging"}},
		Blocks: []hcl.BlockHeaderSchema{{Type: "rule", LabelNames: []string{"name"}}, {Type: "allow", LabelNames: []string{"name"}},
			{Type: "deny", LabelNames: []string{"name"}}, {Type: "reject", LabelNames: []string{"name"}}, {Type: "limit", LabelNames: []string{"name"}}},
	})
	subj := func(name string) *hcl.Range {
		if a, ok := content.Attributes[name]; ok {
			return a.Expr.Range().Ptr()
		}
		return req.Block.DefRange.Ptr()
	}
	oneOf := func(field, v string, valid []string, s *hcl.Range) {
		if !slices.Contains(valid, v) {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid " + field,
				Detail: fmt.Sprintf("%s = %q is not valid; use one of %s.%s", field, v, strings.Join(valid, ", "), states.DidYouMean(v, valid)), Subject: s})
		}
	}
	r := &ufwRes{defaults: map[string]string{}, logging: cfg.Logging, enabled: cfg.Enabled, allowLockout: cfg.AllowLockout}
	for dir, v := range map[string]string{"incoming": cfg.DefaultIncoming, "outgoing": cfg.DefaultOutgoing, "routed": cfg.DefaultRouted} {
		if v != "" {
			oneOf("default_"+dir, v, ufwPolicies, subj("default_"+dir))
			r.defaults[dir] = v
		}
	}
	if cfg.Logging != "" {
		oneOf("logging", cfg.Logging, ufwLevels, subj("logging"))
	}
	seen := map[string]bool{}
	var dataDiags hcl.Diagnostics
	byType := map[string][]ufwRuleBlock{"rule": cfg.Rules, "allow": cfg.Allow, "deny": cfg.Deny, "reject": cfg.Reject, "limit": cfg.Limit}
	next := map[string]int{}
	for _, blk := range content.Blocks {
		if next[blk.Type] >= len(byType[blk.Type]) {
			continue
		}
		rb := byType[blk.Type][next[blk.Type]]
		next[blk.Type]++
		rs := blk.DefRange.Ptr()
		if blk.Type != "rule" {
			if rb.Action != "" && rb.Action != blk.Type {
				diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Conflicting ufw rule action",
					Detail: fmt.Sprintf("A %s block allows no other action than %q (action = %q); use a rule block to give the action.", blk.Type, blk.Type, rb.Action), Subject: rs})
			}
			rb.Action = blk.Type
		}
		if seen[rb.Name] {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Duplicate ufw rule",
				Detail: fmt.Sprintf("A rule named %q is already declared in this ufw block.", rb.Name), Subject: rs})
		}
		seen[rb.Name] = true
		u, d, dd := decodeUfwRule(rb, rs, ruleSides(blk.Body))
		u.rng = blk.DefRange
		diags = append(diags, d...)
		dataDiags = append(dataDiags, dd...)
		r.rules = append(r.rules, u)
	}
	if dataDiags.HasErrors() && !diags.HasErrors() {
		// A source or destination from data (peers(), facts) that is not one host or network
		// fails this ufw resource on this host, and not the bundle on every host.
		return states.DataFault("ufw", dataDiags), diags
	}
	return r, diags
}

// ufwSide says, for the from or to attribute of a rule block, whether it is set and whether its
// value may come from data (see fromBundle).
type ufwSide struct{ set, data bool }

func ruleSides(body hcl.Body) map[string]ufwSide {
	out := map[string]ufwSide{}
	attrs, _ := body.JustAttributes()
	for _, name := range []string{"from", "to"} {
		if a, ok := attrs[name]; ok {
			out[name] = ufwSide{set: true, data: !states.FromBundle(a.Expr)}
		}
	}
	return out
}

func decodeUfwRule(rb ufwRuleBlock, subj *hcl.Range, sides map[string]ufwSide) (ufwRule, hcl.Diagnostics, hcl.Diagnostics) {
	var diags, dataDiags hcl.Diagnostics
	bad := func(field, v, valid string) {
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid " + field + " in ufw rule " + strconv.Quote(rb.Name),
			Detail: fmt.Sprintf("%s = %q is not valid; %s.", field, v, valid), Subject: subj})
	}
	u := ufwRule{name: rb.Name, action: rb.Action, proto: rb.Proto, port: rb.Port, iface: rb.Interface,
		direction: rb.Direction, comment: rb.Comment, v4: true, v6: true}
	if u.action == "" {
		u.action = "allow"
	}
	if !slices.Contains(ufwActions, u.action) {
		bad("action", u.action, "use allow, deny, reject or limit")
	}
	if u.proto == "" {
		u.proto = "any"
	}
	if !slices.Contains(ufwProtos, u.proto) {
		bad("proto", u.proto, "use "+strings.Join(ufwProtos, ", "))
	}
	switch {
	case u.port == "" || u.port == "any":
		u.port = "any"
	case !ufwPortRE.MatchString(u.port):
		bad("port", u.port, `use a port ("22"), a range ("6000:6007") or a list ("80,443")`)
	case strings.ContainsAny(u.port, ":,") && u.proto != "tcp" && u.proto != "udp":
		bad("port", u.port, `a range or a list of ports needs proto = "tcp" or "udp"`)
	}
	if u.port != "any" && u.proto != "any" && u.proto != "tcp" && u.proto != "udp" {
		bad("proto", u.proto, "ports apply to tcp and udp only")
	}
	if u.direction == "" {
		u.direction = "in"
	}
	if u.direction != "in" && u.direction != "out" {
		bad("direction", u.direction, `use "in" or "out"`)
	}
	if u.iface != "" && !ufwIfaceRE.MatchString(u.iface) {
		bad("interface", u.iface, "an interface name is 1 to 15 letters, digits, '_', '.' or '-'")
	}
	if u.action == "limit" && u.direction == "out" {
		bad("action", u.action, "limit applies to incoming rules only")
	}
	// ufw's own parser refuses quotes in a comment ("ERROR: Invalid syntax") and it is kept hex
	// encoded in user.rules; catch it here with a position instead of mid-apply.
	if strings.ContainsAny(u.comment, "'\"\n\r") || len(u.comment) > 240 {
		bad("comment", u.comment, "a comment holds no quotes or line breaks and at most 240 characters")
	}
	for _, side := range []struct {
		field string
		v     *string
	}{{"from", &u.from}, {"to", &u.to}} {
		raw := rb.From
		if side.field == "to" {
			raw = rb.To
		}
		sd := sides[side.field]
		if raw == "any" || (raw == "" && !sd.set) {
			*side.v = "any"
			continue
		}
		// A value that is set but empty (a missing fact, a null) does not widen the rule to
		// "any"; nor does the network of every address: "any" is written out.
		canon, is6, err := states.ParseRuleAddr(raw)
		if err != nil {
			d := &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid " + side.field + " in ufw rule " + strconv.Quote(rb.Name),
				Detail: fmt.Sprintf(`%s = %q is not valid (%v); use "any", an address ("10.0.0.5") or a network ("10.0.0.0/8", "fd00::/8").`, side.field, raw, err), Subject: subj}
			if sd.data {
				dataDiags = append(dataDiags, d)
			} else {
				diags = append(diags, d)
			}
			continue
		}
		*side.v = canon
		if is6 {
			u.v4 = false
		} else {
			u.v6 = false
		}
	}
	if !u.v4 && !u.v6 {
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Mixed address families in ufw rule " + strconv.Quote(rb.Name),
			Detail: "from and to are one IPv4 and one IPv6 address; a rule matches one family. Split it in two rules.", Subject: subj})
	}
	return u, diags, dataDiags
}

// tuple is the rule as ufw writes it after "### tuple ###" in user.rules (v6 false) or
// user6.rules (v6 true).
func (u ufwRule) tuple(v6 bool) string {
	anyAddr := "0.0.0.0/0"
	if v6 {
		anyAddr = "::/0"
	}
	dst, src := u.to, u.from
	if dst == "any" {
		dst = anyAddr
	}
	if src == "any" {
		src = anyAddr
	}
	ifaces := u.direction
	if u.iface != "" {
		ifaces += "_" + u.iface
	}
	t := fmt.Sprintf("%s %s %s %s %s %s %s", u.action, u.proto, u.port, dst, "any", src, ifaces)
	if u.comment != "" {
		t += " comment=" + hex.EncodeToString([]byte(u.comment))
	}
	return t
}

// args are the ufw command-line words of the rule, after the action.
func (u ufwRule) args() []string {
	a := []string{u.action, u.direction}
	if u.iface != "" {
		a = append(a, "on", u.iface)
	}
	if u.proto != "any" {
		a = append(a, "proto", u.proto)
	}
	a = append(a, "from", u.from, "to", u.to)
	if u.port != "any" {
		a = append(a, "port", u.port)
	}
	if u.comment != "" {
		a = append(a, "comment", u.comment)
	}
	return a
}

// ruleFromTuple reads a tuple back into a rule, to delete an undeclared one.
func ruleFromTuple(t string) (ufwRule, bool) {
	comment := ""
	if i := strings.Index(t, " comment="); i >= 0 {
		c, err := hex.DecodeString(strings.TrimSpace(t[i+len(" comment="):]))
		if err == nil {
			comment = string(c)
		}
		t = t[:i]
	}
	f := strings.Fields(t)
	if len(f) != 7 || f[4] != "any" {
		return ufwRule{}, false // application rules, source ports and route rules are not ours
	}
	u := ufwRule{action: f[0], proto: f[1], port: f[2], to: f[3], from: f[5], comment: comment}
	u.direction, u.iface, _ = strings.Cut(f[6], "_")
	for _, p := range []*string{&u.to, &u.from} {
		if *p == "0.0.0.0/0" || *p == "::/0" {
			*p = "any"
		}
	}
	return u, true
}

// ufwState is what ufw's files say.
type ufwState struct {
	enabled  bool // ENABLED=yes and the firewall is loaded
	confOn   bool // ENABLED=yes in ufw.conf
	logging  string
	defaults map[string]string
	ipv6     bool
	rules4   []string
	rules6   []string
	sshPorts []int
}

func ufwPath(p string) string { return filepath.Join(ufwRoot, p) }

// readShellVars reads KEY=value lines, the format of ufw.conf and /etc/default/ufw.
func readShellVars(p string) (map[string]string, error) {
	data, err := os.ReadFile(ufwPath(p))
	if err != nil {
		return nil, err
	}
	vars := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || l[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if ok {
			vars[strings.TrimSpace(k)] = strings.Trim(strings.TrimSpace(v), `"'`)
		}
	}
	return vars, nil
}

// userRulesPath finds a user rules file: /etc/ufw on current ufw, /lib/ufw on old releases.
func userRulesPath(name string) string {
	p := "/etc/ufw/" + name
	if _, err := os.Stat(ufwPath(p)); err != nil {
		if _, err := os.Stat(ufwPath("/lib/ufw/" + name)); err == nil {
			return "/lib/ufw/" + name
		}
	}
	return p
}

func readTuples(p string) ([]string, error) {
	data, err := os.ReadFile(ufwPath(p))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		if t, ok := strings.CutPrefix(l, "### tuple ###"); ok {
			out = append(out, strings.Join(strings.Fields(t), " "))
		}
	}
	return out, nil
}

var policyNames = map[string]string{"DROP": "deny", "ACCEPT": "allow", "REJECT": "reject"}

func readUfw(env *states.Env) (*ufwState, error) {
	v, err := env.Cached("ufw/state", func() (any, error) {
		st := &ufwState{defaults: map[string]string{}}
		conf, err := readShellVars("/etc/ufw/ufw.conf")
		if err != nil {
			return nil, fmt.Errorf("ufw is not installed or not readable: %w", err)
		}
		st.confOn = strings.EqualFold(conf["ENABLED"], "yes")
		st.logging = conf["LOGLEVEL"]
		if st.logging == "" {
			st.logging = "off"
		}
		def, err := readShellVars("/etc/default/ufw")
		if err != nil {
			return nil, err
		}
		st.ipv6 = !strings.EqualFold(def["IPV6"], "no")
		for dir, key := range map[string]string{"incoming": "DEFAULT_INPUT_POLICY", "outgoing": "DEFAULT_OUTPUT_POLICY", "routed": "DEFAULT_FORWARD_POLICY"} {
			st.defaults[dir] = policyNames[def[key]]
		}
		if st.rules4, err = readTuples(userRulesPath("user.rules")); err != nil {
			return nil, err
		}
		if st.rules6, err = readTuples(userRulesPath("user6.rules")); err != nil {
			return nil, err
		}
		st.sshPorts = sshdPorts()
		return st, nil
	})
	if err != nil {
		return nil, err
	}
	st := v.(*ufwState)
	if st.confOn {
		// ENABLED=yes says what boot will do; whether the firewall is up now is whether its
		// chains are loaded.
		exists, err := iptables.ChainExists(env, "filter", "ufw-user-input")
		if err != nil {
			return nil, err
		}
		st.enabled = exists
	}
	return st, nil
}

// sshdPorts returns the ports sshd listens on according to its configuration, 22 by default.
func sshdPorts() []int {
	files := []string{"/etc/ssh/sshd_config"}
	if m, _ := filepath.Glob(ufwPath("/etc/ssh/sshd_config.d/*.conf")); len(m) > 0 {
		for _, f := range m {
			files = append(files, strings.TrimPrefix(f, ufwRoot))
		}
	}
	var ports []int
	for _, f := range files {
		data, err := os.ReadFile(ufwPath(f))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(data), "\n") {
			fs := strings.Fields(l)
			if len(fs) >= 2 && strings.EqualFold(fs[0], "Port") {
				if p, err := strconv.Atoi(fs[1]); err == nil && !slices.Contains(ports, p) {
					ports = append(ports, p)
				}
			}
		}
	}
	if len(ports) == 0 {
		ports = []int{22}
	}
	return ports
}

// want returns the rule tuples the declared rules make in each file.
func (r *ufwRes) want(ipv6 bool) (w4, w6 []string) {
	for _, u := range r.rules {
		if u.v4 {
			w4 = append(w4, u.tuple(false))
		}
		if u.v6 && ipv6 {
			w6 = append(w6, u.tuple(true))
		}
	}
	return w4, w6
}

// allowsPort reports whether the rule lets incoming tcp traffic to port in.
func (u ufwRule) allowsPort(port int) bool {
	if (u.action != "allow" && u.action != "limit") || u.direction != "in" || (u.proto != "tcp" && u.proto != "any") {
		return false
	}
	if u.port == "any" {
		return true
	}
	for _, part := range strings.Split(u.port, ",") {
		lo, hi, isRange := strings.Cut(part, ":")
		a, _ := strconv.Atoi(lo)
		b := a
		if isRange {
			b, _ = strconv.Atoi(hi)
		}
		if port >= a && port <= b {
			return true
		}
	}
	return false
}

// lockout says why applying would cut off SSH, or "".
func (r *ufwRes) lockout(st *ufwState) string {
	enabled := st.enabled
	if r.enabled != nil {
		enabled = *r.enabled
	}
	incoming := st.defaults["incoming"]
	if v, ok := r.defaults["incoming"]; ok {
		incoming = v
	}
	if !enabled || incoming == "allow" {
		return ""
	}
	for _, p := range st.sshPorts {
		for _, u := range r.rules {
			if u.allowsPort(p) {
				return ""
			}
		}
	}
	ports := make([]string, len(st.sshPorts))
	for i, p := range st.sshPorts {
		ports[i] = strconv.Itoa(p)
	}
	return fmt.Sprintf("incoming traffic is %s by default and no rule allows tcp port %s, where sshd listens: "+
		"this would lock every operator out. Add a rule like `rule \"ssh\" { action = \"allow\", port = \"%s\", proto = \"tcp\" }` "+
		"or set allow_lockout = true", incoming+"ed", strings.Join(ports, " or "), ports[0])
}

func (r *ufwRes) diff(st *ufwState) []string {
	var d []string
	for _, dir := range []string{"incoming", "outgoing", "routed"} {
		if v, ok := r.defaults[dir]; ok && st.defaults[dir] != v {
			d = append(d, fmt.Sprintf("~ default %s: %s -> %s", dir, st.defaults[dir], v))
		}
	}
	if r.logging != "" && st.logging != r.logging {
		d = append(d, fmt.Sprintf("~ logging: %s -> %s", st.logging, r.logging))
	}
	w4, w6 := r.want(st.ipv6)
	for _, fam := range []struct {
		name       string
		have, want []string
	}{{"user.rules", st.rules4, w4}, {"user6.rules", st.rules6, w6}} {
		if !slices.Equal(fam.have, fam.want) {
			a := make([]string, len(fam.have))
			for i, t := range fam.have {
				a[i] = readableTuple(t) + "\n"
			}
			b := make([]string, len(fam.want))
			for i, t := range fam.want {
				b[i] = readableTuple(t) + "\n"
			}
			d = append(d, textdiff.Lines(fam.name+" (current)", fam.name+" (declared)", a, b))
		}
	}
	if r.enabled != nil && *r.enabled != st.enabled {
		d = append(d, fmt.Sprintf("~ enabled: %t -> %t", st.enabled, *r.enabled))
	}
	return d
}

func (r *ufwRes) Check(ctx context.Context, env *states.Env) (string, error) {
	st, err := readUfw(env)
	if err != nil {
		return "", err
	}
	d := r.diff(st)
	if len(d) > 0 && !r.allowLockout {
		if why := r.lockout(st); why != "" {
			d = append(d, "! WARNING: "+why+"; apply refuses this.")
		}
	}
	return strings.Join(d, "\n"), nil
}

// readableTuple shows a rule tuple as user.rules holds it, but with its comment as text: ufw
// keeps comments hex encoded, which says nothing to a person reading a plan.
func readableTuple(t string) string {
	i := strings.Index(t, " comment=")
	if i < 0 {
		return t
	}
	c, err := hex.DecodeString(strings.TrimSpace(t[i+len(" comment="):]))
	if err != nil {
		return t
	}
	return t[:i] + " comment=" + strconv.Quote(string(c))
}

func runUfw(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, "ufw", args...)
	cmd.Env = append(os.Environ(), "LANG=C", "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	if err != nil {
		// ufw follows a syntax error with its whole usage text; its first line says what was wrong.
		msg, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n\n")
		return fmt.Errorf("ufw %s: %v: %s", strings.Join(args, " "), err, msg)
	}
	return nil
}

// Apply runs ufw for what differs only: rules before enabling, so that enabling never takes
// effect with the declared default policy and without the declared rules.
func (r *ufwRes) Apply(ctx context.Context, env *states.Env) error {
	st, err := readUfw(env)
	if err != nil {
		return err
	}
	if !r.allowLockout {
		if why := r.lockout(st); why != "" {
			return fmt.Errorf("refusing to apply: %s", why)
		}
	}
	defer env.Forget("ufw/state")
	defer iptables.ForgetChain(env, "filter", "ufw-user-input")
	if r.enabled != nil && !*r.enabled && st.enabled {
		if err := runUfw(ctx, "disable"); err != nil {
			return err
		}
	}
	w4, w6 := r.want(st.ipv6)
	if !slices.Equal(st.rules4, w4) || !slices.Equal(st.rules6, w6) {
		if err := r.applyRules(ctx, st, w4, w6); err != nil {
			return err
		}
	}
	if r.logging != "" && st.logging != r.logging {
		if err := runUfw(ctx, "logging", r.logging); err != nil {
			return err
		}
	}
	for _, dir := range []string{"outgoing", "routed", "incoming"} {
		if v, ok := r.defaults[dir]; ok && st.defaults[dir] != v {
			if err := runUfw(ctx, "default", v, dir); err != nil {
				return err
			}
		}
	}
	if r.enabled != nil && *r.enabled && !st.enabled {
		// Connections this host opened while no firewall tracked them (the minion's own to the
		// master among them) must outlive the enable: see trackOpenFlows. Once more after it,
		// for any opened while ufw ran.
		if _, err := trackOpenFlows(); err != nil {
			return fmt.Errorf("keeping open connections across ufw enable: %w", err)
		}
		if err := runUfw(ctx, "--force", "enable"); err != nil {
			return err
		}
		if _, err := trackOpenFlows(); err != nil {
			return fmt.Errorf("keeping open connections across ufw enable: %w", err)
		}
	}
	return nil
}

// applyRules keeps the longest run of current rules that already matches the declared order,
// deletes the rest and adds the missing rules in order: a changed rule costs a delete and an add,
// not a rebuild of the whole set.
func (r *ufwRes) applyRules(ctx context.Context, st *ufwState, w4, w6 []string) error {
	keep4 := commonPrefix(st.rules4, w4)
	keep6 := commonPrefix(st.rules6, w6)
	var del []ufwRule
	seen := map[string]bool{}
	for _, ts := range [][]string{st.rules4[keep4:], st.rules6[keep6:]} {
		for _, t := range ts {
			u, ok := ruleFromTuple(t)
			if !ok {
				return fmt.Errorf("ufw holds a rule brine cannot manage (%s): remove it with ufw delete", t)
			}
			k := strings.Join(u.args(), "\x00")
			if !seen[k] {
				seen[k] = true
				del = append(del, u)
			}
		}
	}
	for _, u := range del {
		args := u.args()
		if u.comment != "" {
			args = args[:len(args)-2]
		}
		if err := runUfw(ctx, append([]string{"delete"}, args...)...); err != nil {
			return err
		}
	}
	for _, u := range r.rules {
		in4 := u.v4 && slices.Contains(w4[:keep4], u.tuple(false))
		in6 := !st.ipv6 || !u.v6 || slices.Contains(w6[:keep6], u.tuple(true))
		if u.v4 && in4 && in6 || !u.v4 && in6 {
			continue
		}
		if err := runUfw(ctx, u.args()...); err != nil {
			return fmt.Errorf("rule %q: %w", u.name, err)
		}
	}
	return nil
}

func commonPrefix(a, b []string) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}
