package iptables

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"weak"

	"github.com/brinecm/brine/internal/lazyre"
	"github.com/brinecm/brine/states"
	"github.com/brinecm/brine/states/resources/internal/textdiff"
	"github.com/coreos/go-iptables/iptables"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
)

// This file holds iptables_rule and iptables_chain and what they share: reading a chain once per
// run, splitting rule arguments, and normalising a declared rule into the form `iptables -S`
// prints, so that `-p tcp --dport 22 -j ACCEPT` matches the stored `-p tcp -m tcp --dport 22 -j
// ACCEPT` and a second apply changes nothing.

// RuleType is the `iptables_rule` resource type: one rule, present or absent, in a chain brine
// does not own.
var RuleType = &states.Type{Name: "iptables_rule", Labels: 1, Decode: decodeIptRule}

// ChainType is the `iptables_chain` resource type: a chain brine owns, its whole rule list.
var ChainType = &states.Type{Name: "iptables_chain", Labels: 1, Decode: decodeIptChain}

// ipFamily is one of the two iptables families.
type ipFamily string

const (
	famV4 ipFamily = "ipv4"
	famV6 ipFamily = "ipv6"
)

var (
	iptTables   = []string{"filter", "nat", "mangle", "raw", "security"}
	iptBuiltins = map[string][]string{
		"filter":   {"INPUT", "FORWARD", "OUTPUT"},
		"nat":      {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"},
		"mangle":   {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"},
		"raw":      {"PREROUTING", "OUTPUT"},
		"security": {"INPUT", "FORWARD", "OUTPUT"},
	}
	iptChainRE = lazyre.New(`^[A-Za-z0-9_.-]{1,28}$`)
)

func isBuiltinChain(table, chain string) bool { return slices.Contains(iptBuiltins[table], chain) }

// parseFamily turns the `family` argument into the families it names.
func parseFamily(s string) ([]ipFamily, bool) {
	switch s {
	case "", "ipv4":
		return []ipFamily{famV4}, true
	case "ipv6":
		return []ipFamily{famV6}, true
	case "both":
		return []ipFamily{famV4, famV6}, true
	}
	return nil, false
}

// iptHandle returns the run's go-iptables handle for a family; making one forks `iptables
// --version`, so there is one per family per run.
func iptHandle(env *states.Env, fam ipFamily) (*iptables.IPTables, error) {
	v, err := env.Cached("iptables/handle/"+string(fam), func() (any, error) {
		proto := iptables.ProtocolIPv4
		if fam == famV6 {
			proto = iptables.ProtocolIPv6
		}
		return iptables.New(iptables.IPFamily(proto), iptables.Timeout(10))
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", fam, err)
	}
	return v.(*iptables.IPTables), nil
}

// ChainExists reports whether the IPv4 chain table/chain exists, read once per run in the cache
// the iptables types share (ufw asks whether its chains are loaded).
func ChainExists(env *states.Env, table, chain string) (bool, error) {
	cs, err := readChain(env, famV4, table, chain)
	if err != nil {
		return false, err
	}
	return cs.exists, nil
}

// ForgetChain drops what the run read of the IPv4 chain table/chain, after a change to it.
func ForgetChain(env *states.Env, table, chain string) {
	env.Forget(chainKey(famV4, table, chain))
}

// chainState is a chain as `iptables -S CHAIN` shows it.
type chainState struct {
	exists bool
	policy string     // built-in chains only
	rules  [][]string // the arguments of each -A line, after "-A CHAIN"
}

func chainKey(fam ipFamily, table, chain string) string {
	return "iptables/chain/" + string(fam) + "/" + table + "/" + chain
}

// readChain reads a chain once per run (one `iptables -S CHAIN`).
func readChain(env *states.Env, fam ipFamily, table, chain string) (*chainState, error) {
	// Env.Cached holds its lock while filling: get the handle (itself cached) first.
	ipt, err := iptHandle(env, fam)
	if err != nil {
		return nil, err
	}
	v, err := env.Cached(chainKey(fam, table, chain), func() (any, error) {
		lines, err := ipt.List(table, chain)
		if err != nil {
			// A missing chain is an error whose wording differs between the legacy and nf_tables
			// back ends; ask the unambiguous question only on this path.
			if ok, cerr := ipt.ChainExists(table, chain); cerr == nil && !ok {
				return &chainState{}, nil
			}
			return nil, fmt.Errorf("read %s chain %s/%s: %s", fam, table, chain, iptMessage(err))
		}
		return parseChainListing(chain, lines)
	})
	if err != nil {
		return nil, err
	}
	return v.(*chainState), nil
}

func parseChainListing(chain string, lines []string) (*chainState, error) {
	cs := &chainState{exists: true}
	for _, l := range lines {
		f, err := splitArgs(l)
		if err != nil || len(f) < 2 || f[1] != chain {
			continue
		}
		switch f[0] {
		case "-P":
			if len(f) > 2 {
				cs.policy = f[2]
			}
		case "-A":
			cs.rules = append(cs.rules, f[2:])
		}
	}
	return cs, nil
}

// iptMessage is iptables' own message from a go-iptables error, without the command line.
func iptMessage(err error) string {
	var ie *iptables.Error
	if errors.As(err, &ie) {
		s := ie.Error()
		if i := strings.Index(s, ": exit status "); i >= 0 {
			s = s[i+len(": exit status "):]
			if j := strings.Index(s, ": "); j >= 0 {
				s = s[j+2:]
			}
		}
		return strings.TrimSpace(s)
	}
	return err.Error()
}

// splitArgs splits rule arguments as a POSIX shell would split words (quotes and backslashes),
// which is also how iptables-restore reads them and how `iptables -S` quotes them.
func splitArgs(s string) ([]string, error) {
	var out []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
		case c == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, errors.New("unterminated ' quote")
			}
			cur.WriteString(s[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case c == '"':
			inWord = true
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) && (s[i+1] == '"' || s[i+1] == '\\') {
					i++
				}
				cur.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, errors.New(`unterminated " quote`)
			}
		case c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
			inWord = true
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		out = append(out, cur.String())
	}
	return out, nil
}

// joinArgs quotes arguments the way iptables -S and iptables-restore read them.
func joinArgs(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\"'\\") {
			a = `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(a) + `"`
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}

var longOpts = map[string]string{
	"--protocol": "-p", "--source": "-s", "--src": "-s", "--destination": "-d", "--dst": "-d",
	"--in-interface": "-i", "--out-interface": "-o", "--jump": "-j", "--goto": "-g", "--match": "-m",
	"--fragment": "-f", "--destination-port": "--dport", "--source-port": "--sport",
}

// protoMatchOpts are the options that make iptables load the protocol's match implicitly.
var protoMatchOpts = map[string][]string{
	"tcp":   {"--dport", "--sport", "--tcp-flags", "--syn", "--tcp-option"},
	"udp":   {"--dport", "--sport"},
	"icmp":  {"--icmp-type"},
	"icmp6": {"--icmpv6-type"},
	"sctp":  {"--dport", "--sport", "--chunk-types"},
}

// guessCanonical rewrites declared arguments the way iptables stores them for the common cases:
// long options to short ones, host addresses with their prefix length, the source, destination,
// interface and protocol first, the implicit protocol match made explicit, REJECT's default. It is
// a fast path only: when its guess is not in the chain, the rule is normalised by iptables itself.
func guessCanonical(fam ipFamily, args []string) []string {
	var head [5][]string // -s -d -i -o -p, in the order -S prints them
	var rest []string
	order := map[string]int{"-s": 0, "-d": 1, "-i": 2, "-o": 3, "-p": 4}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if s, ok := longOpts[a]; ok {
			a = s
		}
		neg := false
		if a == "!" && i+1 < len(args) {
			n := args[i+1]
			if s, ok := longOpts[n]; ok {
				n = s
			}
			if _, ok := order[n]; ok {
				neg, a, i = true, n, i+1
			}
		}
		if _, ok := order[a]; ok && i+1 < len(args) && !slices.Contains(rest, "-j") && !slices.Contains(rest, "-g") {
			v := args[i+1]
			i++
			switch a {
			case "-s", "-d":
				if !strings.Contains(v, "/") && !strings.Contains(v, ",") {
					if fam == famV6 {
						v += "/128"
					} else {
						v += "/32"
					}
				}
			case "-p":
				v = strings.ToLower(v)
				switch {
				case v == "all" && !neg:
					continue // the default: iptables does not print it
				case v == "icmpv6" || (v == "icmp" && fam == famV6):
					v = "ipv6-icmp"
				}
			}
			var part []string
			if neg {
				part = append(part, "!")
			}
			head[order[a]] = append(part, a, v)
			continue
		}
		if (a == "--state" || a == "--ctstate") && i+1 < len(args) {
			rest = append(rest, a, sortStates(args[i+1]))
			i++
			continue
		}
		rest = append(rest, a)
	}
	var out []string
	for _, h := range head {
		out = append(out, h...)
	}
	// The implicit protocol match, before the first option that needs it.
	if p := head[4]; len(p) > 0 && p[0] != "!" {
		proto := p[len(p)-1]
		if proto == "ipv6-icmp" {
			proto = "icmp6"
		}
		if opts, ok := protoMatchOpts[proto]; ok && !hasMatch(rest, proto) {
			for i, a := range rest {
				if slices.Contains(opts, a) || (a == "!" && i+1 < len(rest) && slices.Contains(opts, rest[i+1])) {
					rest = slices.Insert(rest, i, "-m", proto)
					break
				}
			}
		}
	}
	out = append(out, rest...)
	if j := slices.Index(out, "-j"); j >= 0 && j+1 < len(out) && out[j+1] == "REJECT" && !slices.Contains(out, "--reject-with") {
		if fam == famV6 {
			out = append(out, "--reject-with", "icmp6-port-unreachable")
		} else {
			out = append(out, "--reject-with", "icmp-port-unreachable")
		}
	}
	return out
}

// stateOrder is the order in which iptables prints --state and --ctstate flags.
var stateOrder = []string{"INVALID", "NEW", "RELATED", "ESTABLISHED", "UNTRACKED", "SNAT", "DNAT"}

func sortStates(v string) string {
	fs := strings.Split(strings.ToUpper(v), ",")
	for _, f := range fs {
		if !slices.Contains(stateOrder, f) {
			return v
		}
	}
	slices.SortFunc(fs, func(a, b string) int { return slices.Index(stateOrder, a) - slices.Index(stateOrder, b) })
	return strings.Join(slices.Compact(fs), ",")
}

func hasMatch(args []string, name string) bool {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "-m" && args[i+1] == name {
			return true
		}
	}
	return false
}

// normResult is a declared rule in iptables' own form, or iptables' reason for refusing it.
type normResult struct {
	args []string
	err  string
}

func normKey(fam ipFamily, table string, args []string) string {
	return "iptables/norm/" + string(fam) + "/" + table + "/" + joinArgs(args)
}

// normaliseRules returns the stored form of each declared rule. A rule whose guessed form is in
// one of the known chain listings needs no process; the others are added to a scratch chain
// in one iptables-restore transaction, read back with -S and the scratch chain removed: iptables
// is the only reliable normaliser of its own syntax. Results are cached for the run.
func normaliseRules(env *states.Env, fam ipFamily, table string, rules [][]string, known ...*chainState) ([]normResult, error) {
	out := make([]normResult, len(rules))
	var todo []int
	for i, r := range rules {
		if v, err := env.Cached(normKey(fam, table, r), func() (any, error) { return nil, errNotCached }); err == nil {
			out[i] = v.(normResult)
			continue
		}
		g := guessCanonical(fam, r)
		found := false
		for _, cs := range known {
			if cs != nil && indexRule(cs.rules, g) >= 0 {
				found = true
			}
		}
		if found {
			out[i] = normResult{args: g}
			continue
		}
		todo = append(todo, i)
	}
	if len(todo) > 0 {
		batch := make([][]string, len(todo))
		for k, i := range todo {
			batch[k] = rules[i]
		}
		res, err := scratchNormalise(env, fam, table, batch)
		if err != nil {
			return nil, err
		}
		for k, i := range todo {
			out[i] = res[k]
		}
	}
	for i, r := range rules {
		res := out[i]
		env.Cached(normKey(fam, table, r), func() (any, error) { return res, nil })
	}
	return out, nil
}

var errNotCached = errors.New("not cached")

// scratchNormalise adds rules to a scratch chain in one transaction and reads them back. It
// does so first in a private, empty network namespace, so that normalising (in a plan too)
// leaves the host's tables alone; only rules refused there (they name a custom chain or an ipset
// of the host) are tried in a scratch chain of the host's table, which is removed again. When a
// transaction fails, each rule is tried alone so that the failing ones get iptables' message.
func scratchNormalise(env *states.Env, fam ipFamily, table string, rules [][]string) ([]normResult, error) {
	ipt, err := iptHandle(env, fam)
	if err != nil {
		return nil, err
	}
	out, err := inPrivateNetns(func() ([]normResult, error) { return scratchRound(ipt, fam, table, rules, false) })
	if err != nil {
		out = make([]normResult, len(rules)) // no private namespace here: all in the host's table
		for i := range out {
			out[i].err = "not tried"
		}
	}
	var again [][]string
	var idx []int
	for i, r := range out {
		if r.err != "" {
			again = append(again, rules[i])
			idx = append(idx, i)
		}
	}
	if len(again) > 0 {
		res, err := scratchRound(ipt, fam, table, again, true)
		if err != nil {
			return nil, err
		}
		for k, i := range idx {
			out[i] = res[k]
		}
	}
	return out, nil
}

// inPrivateNetns runs f on a throwaway OS thread in a new, empty network namespace: the
// processes f starts inherit it, and it disappears with the thread.
func inPrivateNetns(f func() ([]normResult, error)) ([]normResult, error) {
	type result struct {
		res []normResult
		err error
	}
	c := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with this goroutine
		if err := syscall.Unshare(syscall.CLONE_NEWNET); err != nil {
			c <- result{err: err}
			return
		}
		res, err := f()
		c <- result{res, err}
	}()
	r := <-c
	return r.res, r.err
}

// scratchRound normalises rules in a scratch chain of the current network namespace's table;
// cleanup removes the chain afterwards (not needed in a private namespace).
func scratchRound(ipt *iptables.IPTables, fam ipFamily, table string, rules [][]string, cleanup bool) ([]normResult, error) {
	scratch := fmt.Sprintf("BRINE-NORM-%d", os.Getpid())
	out := make([]normResult, len(rules))
	run := func(rs [][]string) error {
		var b strings.Builder
		fmt.Fprintf(&b, "*%s\n:%s - [0:0]\n", table, scratch)
		for _, r := range rs {
			fmt.Fprintf(&b, "-A %s %s\n", scratch, joinArgs(r))
		}
		b.WriteString("COMMIT\n")
		return iptRestore(fam, b.String())
	}
	read := func(n int) ([][]string, error) {
		lines, err := ipt.List(table, scratch)
		if err != nil {
			return nil, fmt.Errorf("read scratch chain: %s", iptMessage(err))
		}
		cs, _ := parseChainListing(scratch, lines)
		if len(cs.rules) != n {
			return nil, fmt.Errorf("normalise rules: added %d rules to %s, read back %d", n, scratch, len(cs.rules))
		}
		return cs.rules, nil
	}
	if cleanup {
		defer func() {
			if ok, _ := ipt.ChainExists(table, scratch); ok {
				_ = ipt.ClearAndDeleteChain(table, scratch)
			}
		}()
	}
	if err := run(rules); err == nil {
		got, err := read(len(rules))
		if err != nil {
			return nil, err
		}
		for i := range rules {
			out[i] = normResult{args: got[i]}
		}
		return out, nil
	}
	for i, r := range rules {
		if err := run([][]string{r}); err != nil {
			out[i] = normResult{err: restoreMessage(err)}
			continue
		}
		got, err := read(1)
		if err != nil {
			return nil, err
		}
		out[i] = normResult{args: got[0]}
	}
	return out, nil
}

// restoreError is a failed iptables-restore: its own message and the input line it names.
type restoreError struct {
	msg  string
	line int
}

func (e *restoreError) Error() string { return e.msg }

var restoreLineRE = lazyre.New(`(?:line:? |line )(\d+)`)

// iptRestore applies one table transaction with iptables-restore --noflush: all of it or none.
func iptRestore(fam ipFamily, input string) error {
	bin := "iptables-restore"
	if fam == famV6 {
		bin = "ip6tables-restore"
	}
	cmd := exec.Command(bin, "--noflush", "--wait", "10")
	cmd.Stdin = strings.NewReader(input)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(out.String())
		// Drop the usage hint; keep iptables' reason and the line it failed at.
		var keep []string
		for _, l := range strings.Split(msg, "\n") {
			if !strings.HasPrefix(l, "Try `") {
				keep = append(keep, l)
			}
		}
		msg = strings.Join(keep, "; ")
		if msg == "" {
			msg = err.Error()
		}
		re := &restoreError{msg: bin + ": " + msg}
		if m := restoreLineRE.Get().FindStringSubmatch(msg); m != nil {
			re.line, _ = strconv.Atoi(m[1])
		}
		return re
	}
	return nil
}

func restoreMessage(err error) string {
	var re *restoreError
	if errors.As(err, &re) {
		// The line number is of our scratch input; the reason is what the user needs.
		return restoreLineRE.Get().ReplaceAllString(re.msg, "line ?")
	}
	return err.Error()
}

func indexRule(rules [][]string, r []string) int {
	for i, x := range rules {
		if slices.Equal(x, r) {
			return i
		}
	}
	return -1
}

func ruleLine(chain string, args []string) string { return "-A " + chain + " " + joinArgs(args) }

// ---- conflicts between resources of one bundle ----

// A rule declared with iptables_rule in a chain that an iptables_chain of the same bundle purges
// would be added by one and removed by the other on every run. The decoder of whichever comes
// second says so, through this per-bundle registry (weakly keyed, so compiled bundles are not
// kept alive by it).
var iptDecls struct {
	mu sync.Mutex
	m  map[weak.Pointer[states.Bundle]]*iptBundleDecls // guarded by mu
}

type iptBundleDecls struct {
	purged map[string]string // family/table/chain -> address of the purging iptables_chain
	rules  map[string]string // family/table/chain -> address of an iptables_rule in it
}

func bundleDecls(b *states.Bundle) *iptBundleDecls {
	iptDecls.mu.Lock()
	defer iptDecls.mu.Unlock()
	if iptDecls.m == nil {
		iptDecls.m = map[weak.Pointer[states.Bundle]]*iptBundleDecls{}
	}
	k := weak.Make(b)
	d, ok := iptDecls.m[k]
	if !ok {
		d = &iptBundleDecls{purged: map[string]string{}, rules: map[string]string{}}
		iptDecls.m[k] = d
		runtime.AddCleanup(b, func(k weak.Pointer[states.Bundle]) {
			iptDecls.mu.Lock()
			delete(iptDecls.m, k)
			iptDecls.mu.Unlock()
		}, k)
	}
	return d
}

// declare records a purged chain (purge) or a rule's chain and returns the address of the
// resource it conflicts with, or "".
func declareIpt(b *states.Bundle, fams []ipFamily, table, chain, addr string, purge bool) string {
	if b == nil {
		return ""
	}
	d := bundleDecls(b)
	iptDecls.mu.Lock()
	defer iptDecls.mu.Unlock()
	for _, f := range fams {
		k := string(f) + "/" + table + "/" + chain
		if purge {
			d.purged[k] = addr
			if r, ok := d.rules[k]; ok {
				return r
			}
		} else {
			d.rules[k] = addr
			if c, ok := d.purged[k]; ok {
				return c
			}
		}
	}
	return ""
}

// ---- iptables_rule ----

type iptRuleConfig struct {
	Table string `hcl:"table,optional"`
	Chain string `hcl:"chain"`
	Rule  string `hcl:"rule"`
	// Source and Destination are one address or network each, parsed, and put in front of the
	// rule as -s and -d: the way to give a peer's address, which must not be pasted into rule.
	Source      string `hcl:"source,optional"`
	Destination string `hcl:"destination,optional"`
	Position    *int   `hcl:"position,optional"`
	State       string `hcl:"state,optional"`
	Family      string `hcl:"family,optional"`
}

type iptRule struct {
	table, chain string
	args         []string
	position     int // 1-based; 0 appends
	absent       bool
	families     []ipFamily
}

func decodeIptRule(req *states.DecodeRequest) (states.Resource, hcl.Diagnostics) {
	var cfg iptRuleConfig
	diags := gohcl.DecodeBody(req.Body, req.Ctx, &cfg)
	if diags.HasErrors() {
		return nil, diags
	}
	subj := req.AttrRange
	r := &iptRule{table: cfg.Table, chain: cfg.Chain}
	if r.table == "" {
		r.table = "filter"
	}
	diags = append(diags, checkTableChain(r.table, r.chain, subj("table"), subj("chain"))...)
	var err error
	var argDiags hcl.Diagnostics
	if r.args, err = splitArgs(cfg.Rule); err != nil || len(r.args) == 0 {
		why := "it is empty"
		if err != nil {
			why = err.Error()
		}
		argDiags = append(argDiags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid iptables rule",
			Detail: fmt.Sprintf("rule must hold the rule's arguments as given to iptables after the chain, like \"-p tcp --dport 22 -j ACCEPT\"; %s.", why), Subject: subj("rule")})
	}
	argDiags = append(argDiags, checkRuleArgs(r.args, subj("rule"))...)
	if !argDiags.HasErrors() {
		r.args, err = addrArgs(r.args, cfg.Source, cfg.Destination)
		if err == nil {
			err = setButEmpty(req.Body, cfg.Source, cfg.Destination)
		}
		if err != nil {
			argDiags = append(argDiags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid iptables rule address", Detail: err.Error() + ".", Subject: subj("rule")})
		}
	}
	if argDiags.HasErrors() && (!states.AttrFromBundle(req.Body, "rule") || !states.AttrFromBundle(req.Body, "source") || !states.AttrFromBundle(req.Body, "destination")) {
		// The rule's text or addresses come from data (peers(), facts): a bad value fails this
		// rule on this host, not the bundle (see states.Faulty).
		if diags.HasErrors() {
			return nil, diags
		}
		return states.DataFault(states.Address("iptables_rule", req.Name, 1), argDiags), nil
	}
	diags = append(diags, argDiags...)
	switch cfg.State {
	case "", "present":
	case "absent":
		r.absent = true
	default:
		diags = append(diags, badValue("state", cfg.State, "\"present\" or \"absent\"", subj("state")))
	}
	var ok bool
	if r.families, ok = parseFamily(cfg.Family); !ok {
		diags = append(diags, badValue("family", cfg.Family, "\"ipv4\", \"ipv6\" or \"both\"", subj("family")))
	}
	if !r.absent {
		if other := declareIpt(req.Bundle, r.families, r.table, r.chain, states.Address("iptables_rule", req.Name, 1), false); other != "" {
			diags = append(diags, purgeConflict(other, states.Address("iptables_rule", req.Name, 1), r.table, r.chain, subj("chain")))
		}
	}
	if cfg.Position != nil {
		if *cfg.Position < 1 {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid position",
				Detail: "position is the 1-based place of the rule in its chain (1 is first); leave it out to append.", Subject: subj("position")})
		}
		r.position = *cfg.Position
		if r.absent {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "position with state = \"absent\"",
				Detail: "An absent rule is removed wherever it is; remove position.", Subject: subj("position")})
		}
	}
	return r, diags
}

func purgeConflict(chainAddr, ruleAddr, table, chain string, subj *hcl.Range) *hcl.Diagnostic {
	return &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Rule in a purged chain",
		Detail: fmt.Sprintf("%s adds a rule to %s/%s, which %s purges: every run would add it and remove it again. "+
			"Declare the rule as a rule block of %s instead.", ruleAddr, table, chain, chainAddr, chainAddr), Subject: subj}
}

func badValue(field, got, valid string, subj *hcl.Range) *hcl.Diagnostic {
	return &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid " + field,
		Detail: fmt.Sprintf("%s = %q is not valid; use %s.", field, got, valid), Subject: subj}
}

func checkTableChain(table, chain string, tsubj, csubj *hcl.Range) hcl.Diagnostics {
	var diags hcl.Diagnostics
	if !slices.Contains(iptTables, table) {
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid iptables table",
			Detail: fmt.Sprintf("Table %q does not exist; use one of %s.%s", table, strings.Join(iptTables, ", "), states.DidYouMean(table, iptTables)), Subject: tsubj})
	}
	if !iptChainRE.MatchString(chain) {
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid iptables chain name",
			Detail: fmt.Sprintf("Chain %q: a chain name is 1 to 28 letters, digits, '_', '.' or '-'.", chain), Subject: csubj})
	}
	return diags
}

// addrOpts are the options whose value is a source or destination address.
var addrOpts = []string{"-s", "--source", "--src", "-d", "--destination", "--dst"}

// addrArgs checks the address of every -s and -d in args (one address or network each: no list,
// no host name, which iptables would resolve once, and not every address) and puts source and
// destination in front as -s and -d.
func addrArgs(args []string, source, destination string) ([]string, error) {
	for i, a := range args {
		if !slices.Contains(addrOpts, a) {
			continue
		}
		if i+1 >= len(args) {
			return nil, fmt.Errorf("%s without an address", a)
		}
		if _, _, err := states.ParseRuleAddr(args[i+1]); err != nil {
			return nil, fmt.Errorf("%s %q: %v", a, args[i+1], err)
		}
		if (source != "" && slices.Contains(addrOpts[:3], a)) || (destination != "" && slices.Contains(addrOpts[3:], a)) {
			return nil, fmt.Errorf("%s in the rule and the source or destination argument: give it once", a)
		}
	}
	var head []string
	for _, side := range []struct{ opt, v, name string }{{"-s", source, "source"}, {"-d", destination, "destination"}} {
		if side.v == "" {
			continue
		}
		canon, _, err := states.ParseRuleAddr(side.v)
		if err != nil {
			return nil, fmt.Errorf("%s = %q: %v", side.name, side.v, err)
		}
		head = append(head, side.opt, canon)
	}
	return append(head, args...), nil
}

// setButEmpty refuses a source or destination that is set to an empty value (a missing fact, a
// null): left out, it would widen the rule to every address.
func setButEmpty(body hcl.Body, source, destination string) error {
	attrs, _ := body.JustAttributes()
	for name, v := range map[string]string{"source": source, "destination": destination} {
		if _, set := attrs[name]; set && v == "" {
			return fmt.Errorf("%s is set but empty; leave it out for a rule that matches every address", name)
		}
	}
	return nil
}

// checkRuleArgs refuses arguments that would make a rule something else than a rule spec.
func checkRuleArgs(args []string, subj *hcl.Range) hcl.Diagnostics {
	for _, a := range args {
		switch a {
		case "-A", "--append", "-I", "--insert", "-D", "--delete", "-R", "--replace", "-t", "--table",
			"-F", "--flush", "-X", "--delete-chain", "-N", "--new-chain", "-P", "--policy", "-C", "--check":
			return hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Invalid iptables rule",
				Detail: fmt.Sprintf("The rule holds %s; give only the match and target arguments (table, chain and position are separate arguments).", a), Subject: subj}}
		}
	}
	return nil
}

func (r *iptRule) Check(ctx context.Context, env *states.Env) (string, error) {
	var diffs []string
	for _, fam := range r.families {
		d, err := r.checkFamily(env, fam)
		if err != nil {
			return "", err
		}
		diffs = append(diffs, d...)
	}
	return strings.Join(diffs, "\n"), nil
}

func (r *iptRule) checkFamily(env *states.Env, fam ipFamily) ([]string, error) {
	cs, err := readChain(env, fam, r.table, r.chain)
	if err != nil {
		return nil, err
	}
	where := fmt.Sprintf("%s %s/%s", fam, r.table, r.chain)
	if !cs.exists {
		if r.absent {
			return nil, nil
		}
		return []string{fmt.Sprintf("+ %s (chain %s does not exist yet)", ruleLine(r.chain, r.args), where)}, nil
	}
	norm, err := normaliseRules(env, fam, r.table, [][]string{r.args}, cs)
	if err != nil {
		return nil, err
	}
	n := norm[0]
	if n.err != "" {
		if r.absent {
			return nil, nil // a rule iptables refuses cannot be in the chain
		}
		return []string{fmt.Sprintf("+ %s: %s (iptables refuses it: %s)", where, ruleLine(r.chain, r.args), n.err)}, nil
	}
	i := indexRule(cs.rules, n.args)
	switch {
	case r.absent && i >= 0:
		return []string{fmt.Sprintf("- %s: %s", where, ruleLine(r.chain, n.args))}, nil
	case r.absent:
		return nil, nil
	case i < 0 && r.position > 0:
		return []string{fmt.Sprintf("+ %s: %s (at position %d)", where, ruleLine(r.chain, n.args), r.position)}, nil
	case i < 0:
		return []string{fmt.Sprintf("+ %s: %s", where, ruleLine(r.chain, n.args))}, nil
	case r.position > 0 && i != r.position-1 && !(r.position > len(cs.rules) && i == len(cs.rules)-1):
		return []string{fmt.Sprintf("~ %s: %s moves from position %d to %d", where, ruleLine(r.chain, n.args), i+1, r.position)}, nil
	}
	return nil, nil
}

func (r *iptRule) Apply(ctx context.Context, env *states.Env) error {
	for _, fam := range r.families {
		if err := ctx.Err(); err != nil {
			return err
		}
		d, err := r.checkFamily(env, fam)
		if err != nil {
			return err
		}
		if len(d) == 0 {
			continue
		}
		ipt, err := iptHandle(env, fam)
		if err != nil {
			return err
		}
		cs, err := readChain(env, fam, r.table, r.chain)
		if err != nil {
			return err
		}
		env.Forget(chainKey(fam, r.table, r.chain))
		if r.absent {
			if err := ipt.Delete(r.table, r.chain, r.args...); err != nil {
				return fmt.Errorf("%s: delete from %s/%s: %s", fam, r.table, r.chain, iptMessage(err))
			}
			continue
		}
		if !cs.exists {
			return fmt.Errorf("%s: chain %s/%s does not exist: declare it with iptables_chain and make this rule depend on it", fam, r.table, r.chain)
		}
		norm, _ := normaliseRules(env, fam, r.table, [][]string{r.args}, cs)
		if i := indexRule(cs.rules, norm[0].args); i >= 0 && norm[0].err == "" {
			// Present at the wrong position: delete and insert again in one transaction, so that
			// a failure leaves the chain as it was.
			pos := min(r.position, len(cs.rules))
			tx := fmt.Sprintf("*%s\n-D %s %d\n-I %s %d %s\nCOMMIT\n", r.table, r.chain, i+1, r.chain, pos, joinArgs(r.args))
			if err := iptRestore(fam, tx); err != nil {
				return fmt.Errorf("%s: move rule in %s/%s: %s", fam, r.table, r.chain, restoreMessage(err))
			}
			continue
		}
		if r.position > 0 {
			// A position past the end means last: iptables refuses to insert beyond it.
			err = ipt.Insert(r.table, r.chain, min(r.position, len(cs.rules)+1), r.args...)
		} else {
			err = ipt.Append(r.table, r.chain, r.args...)
		}
		if err != nil {
			return fmt.Errorf("%s: add rule to %s/%s: %s", fam, r.table, r.chain, iptMessage(err))
		}
	}
	return nil
}

// ---- iptables_chain ----

type iptChainConfig struct {
	Policy string              `hcl:"policy,optional"`
	Purge  bool                `hcl:"purge,optional"`
	State  string              `hcl:"state,optional"`
	Family string              `hcl:"family,optional"`
	Rules  []iptChainRuleBlock `hcl:"rule,block"`
}

type iptChainRuleBlock struct {
	Args        string `hcl:"args"`
	Source      string `hcl:"source,optional"`
	Destination string `hcl:"destination,optional"`
	Family      string `hcl:"family,optional"`
}

type iptChainRule struct {
	args     []string
	families []ipFamily
}

type iptChain struct {
	table, chain string
	builtin      bool
	policy       string
	purge        bool
	absent       bool
	families     []ipFamily
	rules        []iptChainRule
}

func decodeIptChain(req *states.DecodeRequest) (states.Resource, hcl.Diagnostics) {
	var cfg iptChainConfig
	diags := gohcl.DecodeBody(req.Body, req.Ctx, &cfg)
	if diags.HasErrors() {
		return nil, diags
	}
	c := &iptChain{policy: cfg.Policy, purge: cfg.Purge}
	label := req.Block.LabelRanges[0].Ptr()
	c.table, c.chain = "filter", req.Name
	if t, ch, ok := strings.Cut(req.Name, "/"); ok {
		c.table, c.chain = t, ch
	}
	diags = append(diags, checkTableChain(c.table, c.chain, label, label)...)
	c.builtin = isBuiltinChain(c.table, c.chain)
	content, _, _ := req.Body.PartialContent(&hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{{Name: "policy"}, {Name: "state"}, {Name: "family"}},
		Blocks:     []hcl.BlockHeaderSchema{{Type: "rule"}},
	})
	subj := func(name string) *hcl.Range {
		if a, ok := content.Attributes[name]; ok {
			return a.Expr.Range().Ptr()
		}
		return label
	}
	switch cfg.State {
	case "", "present":
	case "absent":
		c.absent = true
		if c.builtin {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "A built-in chain cannot be absent",
				Detail: fmt.Sprintf("%s is built into the %s table; only custom chains can be removed.", c.chain, c.table), Subject: subj("state")})
		}
	default:
		diags = append(diags, badValue("state", cfg.State, "\"present\" or \"absent\"", subj("state")))
	}
	switch {
	case c.policy == "":
	case !c.builtin:
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Policy on a custom chain",
			Detail: fmt.Sprintf("Only built-in chains (%s in %s) have a policy; %s is a custom chain. End it with a rule like `-j DROP` instead.",
				strings.Join(iptBuiltins[c.table], ", "), c.table, c.chain), Subject: subj("policy")})
	case c.policy != "ACCEPT" && c.policy != "DROP":
		diags = append(diags, badValue("policy", c.policy, "\"ACCEPT\" or \"DROP\"", subj("policy")))
	}
	var ok bool
	if c.families, ok = parseFamily(cfg.Family); !ok {
		diags = append(diags, badValue("family", cfg.Family, "\"ipv4\", \"ipv6\" or \"both\"", subj("family")))
	}
	var dataDiags hcl.Diagnostics
	for i, rb := range cfg.Rules {
		rsubj := label
		data := false
		if i < len(content.Blocks) {
			rsubj = content.Blocks[i].DefRange.Ptr()
			b := content.Blocks[i].Body
			data = !states.AttrFromBundle(b, "args") || !states.AttrFromBundle(b, "source") || !states.AttrFromBundle(b, "destination")
		}
		args, err := splitArgs(rb.Args)
		var argDiags hcl.Diagnostics
		if err != nil || len(args) == 0 {
			argDiags = append(argDiags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid iptables rule",
				Detail: "args must hold the rule's arguments, like \"-p tcp --dport 22 -j ACCEPT\".", Subject: rsubj})
		}
		argDiags = append(argDiags, checkRuleArgs(args, rsubj)...)
		if !argDiags.HasErrors() {
			if args, err = addrArgs(args, rb.Source, rb.Destination); err == nil && i < len(content.Blocks) {
				err = setButEmpty(content.Blocks[i].Body, rb.Source, rb.Destination)
			}
			if err != nil {
				argDiags = append(argDiags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid iptables rule address", Detail: err.Error() + ".", Subject: rsubj})
			}
		}
		if argDiags.HasErrors() {
			if data {
				dataDiags = append(dataDiags, argDiags...)
			} else {
				diags = append(diags, argDiags...)
			}
			continue
		}
		fams := c.families
		if rb.Family != "" {
			f, ok := parseFamily(rb.Family)
			if !ok {
				diags = append(diags, badValue("family", rb.Family, "\"ipv4\", \"ipv6\" or \"both\"", rsubj))
			}
			fams = f
			for _, x := range f {
				if !slices.Contains(c.families, x) {
					diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Rule family outside its chain's",
						Detail: fmt.Sprintf("This rule is for %s but the chain is managed for %s only; set family on the chain.", x, cfg.Family), Subject: rsubj})
				}
			}
		}
		c.rules = append(c.rules, iptChainRule{args: args, families: fams})
	}
	if c.purge && !c.absent {
		if other := declareIpt(req.Bundle, c.families, c.table, c.chain, states.Address("iptables_chain", req.Name, 1), true); other != "" {
			diags = append(diags, purgeConflict(states.Address("iptables_chain", req.Name, 1), other, c.table, c.chain, label))
		}
	}
	if c.absent && len(c.rules) > 0 {
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Rules in an absent chain",
			Detail: "A chain with state = \"absent\" is removed with its rules; remove the rule blocks.", Subject: label})
	}
	if dataDiags.HasErrors() && !diags.HasErrors() {
		// A rule whose text or address comes from data (peers(), facts) and is not valid fails
		// this chain on this host, not the bundle (see states.Faulty): the chain stays as it is.
		return states.DataFault(states.Address("iptables_chain", req.Name, 1), dataDiags), diags
	}
	return c, diags
}

func (c *iptChain) rulesFor(fam ipFamily) [][]string {
	var out [][]string
	for _, r := range c.rules {
		if slices.Contains(r.families, fam) {
			out = append(out, r.args)
		}
	}
	return out
}

// chainPlan is what one family of a chain needs.
type chainPlan struct {
	diff    []string
	create  bool
	remove  bool
	policy  string     // new policy, "" to keep
	rewrite [][]string // purge: the whole chain, in order (nil: no rewrite)
	add     [][]string // no purge: declared rules to append
	bad     []string   // rules iptables refuses, with its message
}

func (c *iptChain) plan(env *states.Env, fam ipFamily) (*chainPlan, error) {
	cs, err := readChain(env, fam, c.table, c.chain)
	if err != nil {
		return nil, err
	}
	p := &chainPlan{}
	where := fmt.Sprintf("%s %s/%s", fam, c.table, c.chain)
	if c.absent {
		if cs.exists {
			p.remove = true
			p.diff = append(p.diff, fmt.Sprintf("- %s: chain with %d rules", where, len(cs.rules)))
		}
		return p, nil
	}
	if !cs.exists {
		if c.builtin {
			return nil, fmt.Errorf("built-in chain %s not found", where)
		}
		p.create = true
		p.diff = append(p.diff, "+ "+where+": new chain")
	}
	if c.policy != "" && cs.policy != c.policy {
		p.policy = c.policy
		p.diff = append(p.diff, fmt.Sprintf("~ %s: policy %s -> %s", where, cs.policy, c.policy))
	}
	declared := c.rulesFor(fam)
	norm, err := normaliseRules(env, fam, c.table, declared, cs)
	if err != nil {
		return nil, err
	}
	want := make([][]string, len(declared))
	for i, n := range norm {
		want[i] = n.args
		if n.err != "" {
			want[i] = guessCanonical(fam, declared[i])
			p.bad = append(p.bad, fmt.Sprintf("%s: %s", ruleLine(c.chain, declared[i]), n.err))
		}
	}
	if c.purge {
		if !slices.EqualFunc(cs.rules, want, slices.Equal[[]string]) {
			p.rewrite = declared
			have := make([]string, len(cs.rules))
			for i, r := range cs.rules {
				have[i] = ruleLine(c.chain, r) + "\n"
			}
			wl := make([]string, len(want))
			for i, r := range want {
				wl[i] = ruleLine(c.chain, r) + "\n"
			}
			p.diff = append(p.diff, textdiff.Lines(where+" (current)", where+" (declared)", have, wl))
		}
	} else {
		for i, w := range want {
			if indexRule(cs.rules, w) < 0 {
				p.add = append(p.add, declared[i])
				p.diff = append(p.diff, fmt.Sprintf("+ %s: %s", where, ruleLine(c.chain, w)))
			}
		}
	}
	for _, b := range p.bad {
		p.diff = append(p.diff, "! iptables refuses "+b)
	}
	return p, nil
}

func (c *iptChain) Check(ctx context.Context, env *states.Env) (string, error) {
	var diffs []string
	for _, fam := range c.families {
		p, err := c.plan(env, fam)
		if err != nil {
			return "", err
		}
		diffs = append(diffs, p.diff...)
	}
	return strings.Join(diffs, "\n"), nil
}

// Apply changes each family in one iptables-restore transaction per table: the new chain, its
// policy and its rules commit together or not at all, so a rule iptables refuses leaves the chain
// exactly as it was.
func (c *iptChain) Apply(ctx context.Context, env *states.Env) error {
	for _, fam := range c.families {
		if err := ctx.Err(); err != nil {
			return err
		}
		p, err := c.plan(env, fam)
		if err != nil {
			return err
		}
		if len(p.diff) == 0 {
			continue
		}
		env.Forget(chainKey(fam, c.table, c.chain))
		if p.remove {
			ipt, err := iptHandle(env, fam)
			if err != nil {
				return err
			}
			if err := ipt.ClearAndDeleteChain(c.table, c.chain); err != nil {
				return fmt.Errorf("%s: remove chain %s/%s: %s", fam, c.table, c.chain, iptMessage(err))
			}
			continue
		}
		var b strings.Builder
		var lineRule []int // input line -> index in the rules written (-1: not a rule)
		line := func(s string, rule int) {
			b.WriteString(s + "\n")
			lineRule = append(lineRule, rule)
		}
		line("*"+c.table, -1)
		var written [][]string
		switch {
		case p.create && !c.builtin:
			line(":"+c.chain+" - [0:0]", -1) // with --noflush: create (or flush) this chain only
		case p.rewrite != nil:
			line("-F "+c.chain, -1)
		}
		if p.policy != "" {
			line("-P "+c.chain+" "+p.policy, -1)
		}
		rules := p.add
		if p.rewrite != nil {
			rules = p.rewrite
		}
		for _, r := range rules {
			line("-A "+c.chain+" "+joinArgs(r), len(written))
			written = append(written, r)
		}
		line("COMMIT", -1)
		if err := iptRestore(fam, b.String()); err != nil {
			var re *restoreError
			if errors.As(err, &re) && re.line >= 1 && re.line <= len(lineRule) && lineRule[re.line-1] >= 0 {
				bad := written[lineRule[re.line-1]]
				return fmt.Errorf("%s %s/%s left unchanged: rule %q: %s", fam, c.table, c.chain, joinArgs(bad), re.msg)
			}
			return fmt.Errorf("%s %s/%s left unchanged: %s", fam, c.table, c.chain, err)
		}
	}
	return nil
}
