package tinc

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/brinecm/brine/internal/atomicfile"
	"github.com/brinecm/brine/internal/lazyre"
	"github.com/brinecm/brine/states"
	"github.com/brinecm/brine/states/resources/internal/daemon"
	"github.com/brinecm/brine/states/resources/internal/textdiff"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

// tinc_network manages one tinc 1.0 network (Debian's tinc): the host's RSA key pair (made once,
// on the host; the private key never leaves it), tinc.conf, hosts/<member>, tinc-up/tinc-down,
// and a running tincd. Its check reads files and /proc only.

// Type is the `tinc_network` resource type: one tinc 1.0 network, its keys, configuration and daemon.
var Type = &states.Type{Name: "tinc_network", Labels: 1, Decode: decodeTinc, Facts: Facts}

// tincRoot prefixes every path of tinc_network and Facts, for tests.
var tincRoot = ""

type tincConfig struct {
	Name          string    `hcl:"name,optional"`
	Address       string    `hcl:"address,optional"`
	Port          *int      `hcl:"port,optional"`
	Interface     string    `hcl:"interface,optional"`
	AddressFamily string    `hcl:"address_family,optional"`
	KeySize       *int      `hcl:"key_size,optional"`
	Running       *bool     `hcl:"running,optional"`
	Members       cty.Value `hcl:"members,optional"`
}

type tincMember struct {
	name      string // tinc name
	address   string // public address, "" when it only connects out
	port      int
	vpn       netip.Addr
	publicKey string
}

type tincNet struct {
	net       string
	self      string
	addr      netip.Prefix // this host's VPN address and the mesh prefix
	port      int
	iface     string
	family    string
	keySize   int
	running   bool
	members   []tincMember // sorted by name, self included when listed
	netDir    string
	pidfile   string
	logfile   string
	nameClash string
}

// ifaceRE is what a network interface name may be.
var ifaceRE = lazyre.New(`^[A-Za-z0-9_.-]{1,15}$`)

var tincNameRE = lazyre.New(`^[A-Za-z0-9_]+$`)

// TincName maps a minion id (letters, digits, dots and dashes) to a valid tinc node name:
// every character outside [A-Za-z0-9_] becomes '_'.
func TincName(id string) string {
	b := []byte(id)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			b[i] = '_'
		}
	}
	return string(b)
}

// minionID finds minion.id in an evaluation context or its parents.
func minionID(ctx *hcl.EvalContext) string {
	for c := ctx; c != nil; c = c.Parent() {
		if m, ok := c.Variables["minion"]; ok && m.Type().IsObjectType() && m.Type().HasAttribute("id") {
			if id := m.GetAttr("id"); id.IsKnown() && !id.IsNull() && id.Type() == cty.String {
				return id.AsString()
			}
		}
	}
	return ""
}

func decodeTinc(req *states.DecodeRequest) (states.Resource, hcl.Diagnostics) {
	var cfg tincConfig
	diags := gohcl.DecodeBody(req.Body, req.Ctx, &cfg)
	if diags.HasErrors() {
		return nil, diags
	}
	subj := req.AttrRange
	bad := func(field, detail string) {
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid " + field, Detail: detail, Subject: subj(field)})
	}
	n := &tincNet{net: req.Name, port: 655, family: "ipv4", keySize: 4096, running: true}
	if !tincNameRE.MatchString(n.net) || len(n.net) > 32 {
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid tinc network name",
			Detail: fmt.Sprintf("%q: a network name is 1 to 32 letters, digits or '_' (it names /etc/tinc/NAME).", n.net), Subject: req.Block.LabelRanges[0].Ptr()})
	}
	n.self = cfg.Name
	if n.self == "" {
		n.self = TincName(minionID(req.Ctx))
	}
	if !tincNameRE.MatchString(n.self) {
		bad("name", fmt.Sprintf("name = %q is not a tinc node name: use letters, digits and '_' only (TincName maps a minion id).", n.self))
	}
	if cfg.Port != nil {
		n.port = *cfg.Port
		if n.port < 1 || n.port > 65535 {
			bad("port", fmt.Sprintf("port = %d is not a port number.", n.port))
		}
	}
	if cfg.KeySize != nil {
		n.keySize = *cfg.KeySize
		if n.keySize < 1024 || n.keySize > 8192 {
			bad("key_size", fmt.Sprintf("key_size = %d: use 2048 to 8192 bits (4096 by default).", n.keySize))
		}
	}
	if cfg.Running != nil {
		n.running = *cfg.Running
	}
	if cfg.AddressFamily != "" {
		n.family = cfg.AddressFamily
		if !slices.Contains([]string{"ipv4", "ipv6", "any"}, n.family) {
			bad("address_family", fmt.Sprintf("address_family = %q is not valid; use \"ipv4\", \"ipv6\" or \"any\".", n.family))
		}
	}
	n.iface = cfg.Interface
	if n.iface == "" {
		n.iface = "tinc-" + n.net
		if len(n.iface) > 15 {
			n.iface = n.iface[:15]
		}
	}
	if !ifaceRE.MatchString(n.iface) {
		bad("interface", fmt.Sprintf("interface = %q: an interface name is 1 to 15 letters, digits, '_', '.' or '-'.", n.iface))
	}
	members, d := tincMembers(cfg.Members, n.port, subj("members"))
	// members is usually built from peers(): a member's bad address or key is that minion's data,
	// and fails this resource on this host, not the bundle (see states.Faulty).
	membersData := !states.AttrFromBundle(req.Body, "members")
	if d.HasErrors() && membersData {
		return states.DataFault(fmt.Sprintf("tinc_network %q: members", n.net), d), diags
	}
	diags = append(diags, d...)
	n.members = members
	var selfMember *tincMember
	for i := range n.members {
		if n.members[i].name == n.self {
			selfMember = &n.members[i]
		}
	}
	switch {
	case cfg.Address != "":
		p, err := netip.ParsePrefix(cfg.Address)
		if a, aerr := netip.ParseAddr(cfg.Address); aerr == nil {
			// A bare address gets the usual mesh prefix: /24 for IPv4, /64 for IPv6.
			p, err = netip.PrefixFrom(a, map[bool]int{false: 24, true: 64}[a.Is6()]), nil
		}
		if err != nil {
			bad("address", fmt.Sprintf("address = %q: give this host's VPN address with the mesh's prefix length, like \"10.8.0.1/24\".", cfg.Address))
		} else {
			n.addr = p
		}
		if selfMember != nil && selfMember.vpn.IsValid() && err == nil && selfMember.vpn != p.Addr() {
			why := fmt.Sprintf("address %s differs from the vpn_address %s that members gives for %s.", p.Addr(), selfMember.vpn, n.self)
			if membersData || !states.AttrFromBundle(req.Body, "address") {
				return &states.Faulty{Err: fmt.Errorf("tinc_network %q: %s", n.net, why)}, diags
			}
			bad("address", why)
		}
	case selfMember != nil && selfMember.vpn.IsValid():
		bits := 24
		if selfMember.vpn.Is6() {
			bits = 64
		}
		n.addr = netip.PrefixFrom(selfMember.vpn, bits)
	default:
		bad("address", fmt.Sprintf("This host (%s) needs a VPN address: set address = \"10.8.0.1/24\" or list it in members with its vpn_address.", n.self))
	}
	// Another member on this host's own VPN address (this host not in members, or listed under
	// another address) would be routed this host's traffic as well.
	if n.addr.IsValid() {
		for _, m := range n.members {
			if m.name != n.self && m.vpn.IsValid() && m.vpn.Unmap() == n.addr.Addr().Unmap() {
				why := fmt.Sprintf("member %s has this host's VPN address %s: each member needs its own.", m.name, n.addr.Addr())
				if membersData || !states.AttrFromBundle(req.Body, "address") {
					return &states.Faulty{Err: fmt.Errorf("tinc_network %q: %s", n.net, why)}, diags
				}
				bad("members", why)
			}
		}
	}
	n.netDir = filepath.Join("/etc/tinc", n.net)
	n.pidfile = "/run/tinc." + n.net + ".pid"
	n.logfile = "/var/log/tinc." + n.net + ".log"
	return n, diags
}

// tincMembers reads the members list: objects with name, address, vpn_address, public_key and
// optionally port, as written by hand or built from peers(...).
func tincMembers(v cty.Value, defPort int, subj *hcl.Range) ([]tincMember, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	if v.Type() == cty.NilType || v.IsNull() {
		return nil, nil
	}
	bad := func(detail string) {
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid members", Detail: detail, Subject: subj})
	}
	if !v.IsWhollyKnown() || !(v.Type().IsListType() || v.Type().IsTupleType() || v.Type().IsSetType()) {
		bad("members must be a list of objects like { name = \"web1\", address = \"203.0.113.5\", vpn_address = \"10.8.0.2\", public_key = \"-----BEGIN RSA PUBLIC KEY-----...\" }.")
		return nil, diags
	}
	var out []tincMember
	seen := map[string]string{}
	vpnOf := map[netip.Addr]string{} // VPN address -> the member given it first
	i := 0
	for it := v.ElementIterator(); it.Next(); i++ {
		_, e := it.Element()
		if !(e.Type().IsObjectType() || e.Type().IsMapType()) {
			bad(fmt.Sprintf("members[%d] is a %s, not an object.", i, e.Type().FriendlyName()))
			continue
		}
		get := func(k string) string {
			var x cty.Value
			switch {
			case e.Type().IsObjectType() && e.Type().HasAttribute(k):
				x = e.GetAttr(k)
			case e.Type().IsMapType() && e.HasIndex(cty.StringVal(k)).True():
				x = e.Index(cty.StringVal(k))
			default:
				return ""
			}
			if x.IsNull() {
				return ""
			}
			s, err := convert.Convert(x, cty.String)
			if err != nil {
				bad(fmt.Sprintf("members[%d].%s must be a string.", i, k))
				return ""
			}
			return s.AsString()
		}
		// Every field is parsed into its type and written back from it: no text of a member's
		// reaches a hosts file as it came (a newline in a value would add a line, a directive).
		m := tincMember{name: TincName(get("name")), port: defPort}
		if get("name") == "" || len(get("name")) > 64 {
			bad(fmt.Sprintf("members[%d] has no name, or one longer than 64 characters.", i))
			continue
		}
		if s := get("address"); s != "" {
			a, err := states.ParseHostAddress(s)
			if err != nil {
				bad(fmt.Sprintf("members[%d].address = %q: %v; give one host name or IP address.", i, s, err))
			}
			m.address = a
		}
		if s := get("public_key"); strings.TrimSpace(s) != "" {
			k, err := states.ParseTincPublicKey(s)
			if err != nil {
				bad(fmt.Sprintf("members[%d].public_key (%s): %v; give exactly one PEM \"RSA PUBLIC KEY\" block and nothing around it.", i, m.name, err))
			}
			m.publicKey = k
		}
		if prev, dup := seen[m.name]; dup {
			bad(fmt.Sprintf("members %q and %q have the same tinc name %s.", prev, get("name"), m.name))
		}
		seen[m.name] = get("name")
		if p := get("port"); p != "" {
			if m.port, _ = strconv.Atoi(p); m.port < 1 || m.port > 65535 {
				bad(fmt.Sprintf("members[%d].port = %q is not a port number.", i, p))
			}
		}
		if s := get("vpn_address"); s != "" {
			a, err := netip.ParseAddr(strings.Split(s, "/")[0])
			if err != nil || a.Zone() != "" {
				bad(fmt.Sprintf("members[%d].vpn_address = %q is not an IP address.", i, s))
			}
			m.vpn = a
			// Every member's hosts file gives it its VPN address as its Subnet: two members
			// given one address (a compromised minion that chose an attested address ending
			// like another's, where VPN addresses are derived from it) would both be routed
			// it, and tincd could send one's traffic to the other.
			if a.IsValid() {
				if prev, dup := vpnOf[a.Unmap()]; dup {
					bad(fmt.Sprintf("members %q and %q have the same vpn_address %s: each member needs its own.", prev, get("name"), a.Unmap()))
				}
				vpnOf[a.Unmap()] = get("name")
			}
		} else {
			bad(fmt.Sprintf("members[%d] (%s) has no vpn_address.", i, m.name))
		}
		out = append(out, m)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].name < out[b].name })
	return out, diags
}

func (n *tincNet) path(p ...string) string {
	return filepath.Join(append([]string{tincRoot, n.netDir}, p...)...)
}

// publicKey reads the host's key pair; "" when there is none yet.
func (n *tincNet) publicKey() (string, error) {
	data, err := os.ReadFile(n.path("rsa_key.priv"))
	if os.IsNotExist(err) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	blk, _ := pem.Decode(data)
	if blk == nil {
		return "", fmt.Errorf("%s is not a PEM key", n.path("rsa_key.priv"))
	}
	k, err := x509.ParsePKCS1PrivateKey(blk.Bytes)
	if err != nil {
		return "", fmt.Errorf("%s: %w", n.path("rsa_key.priv"), err)
	}
	return states.EncodeTincPublicKey(&k.PublicKey), nil
}

// files returns every file the network consists of, by path under the network directory.
// redialFor bounds how long a reload keeps asking tincd to redial members not connected yet.
const redialFor = 3 * time.Second

// maxRetry is tinc.conf's MaxTimeout: the longest wait, in seconds, between two attempts to
// reach a member.
const maxRetry = 1

// core is tinc.conf without its ConnectTo lines: what needs a restart rather than a reload.
func (n *tincNet) files(pub string) (files map[string][]byte, core string) {
	files = map[string][]byte{}
	var conf strings.Builder
	// MaxTimeout caps tincd's wait between attempts to reach a member it dials (900 s by
	// default, growing by 5 s per failure). A member refuses us until it holds our key, and
	// nothing tells our tincd when it does: the members of a fresh mesh get each other's keys
	// in the same apply but not at the same moment, so whoever dialled first could wait 5-15 s
	// for its next attempt. The SIGALRM after a reload (Apply, without systemd) closes a fresh
	// mesh at once; the cap bounds the wait when that attempt came too early.
	//
	// StrictSubnets: a member routes to another only the Subnets its own hosts files give it
	// (written from the bundle, the VPN addresses it assigns), never what the other's tincd
	// announces. Without it tinc 1.0 takes any Subnet a node announces: a member whose host was
	// broken into (it holds its tinc key) announced another's address with a better weight
	// ("10.8.0.2/32#1") and received the traffic meant for it.
	fmt.Fprintf(&conf, "# Managed by brine (tinc_network %q).\nName = %s\nInterface = %s\nAddressFamily = %s\nPort = %d\nMaxTimeout = %d\nStrictSubnets = yes\n",
		n.net, n.self, n.iface, n.family, n.port, maxRetry)
	core = conf.String()
	selfAddress := ""
	for _, m := range n.members {
		if m.name == n.self {
			selfAddress = m.address
		}
	}
	for _, m := range n.members {
		// One side of each pair dials: the one whose name sorts first, unless the other has no
		// public address (it only connects out, so it dials us) or we have none (we dial
		// everyone who has one). When both sides dial at once, tincd keeps the newer connection
		// on each side, so both connections close, and the two back off in lockstep and cross
		// again: members of a fresh mesh stayed apart for minutes that way.
		if m.name == n.self || m.address == "" {
			continue
		}
		if n.dials(selfAddress, m) {
			fmt.Fprintf(&conf, "ConnectTo = %s\n", m.name)
		}
	}
	files["tinc.conf"] = []byte(conf.String())
	selfListed := false
	for _, m := range n.members {
		var h strings.Builder
		h.WriteString("# Managed by brine.\n")
		key := m.publicKey
		if m.name == n.self {
			selfListed = true
			key = pub
			if m.address != "" {
				fmt.Fprintf(&h, "Address = %s %d\n", m.address, n.port)
			}
			fmt.Fprintf(&h, "Subnet = %s/%d\n", n.addr.Addr(), n.addr.Addr().BitLen())
		} else {
			if m.address != "" {
				fmt.Fprintf(&h, "Address = %s %d\n", m.address, m.port)
			}
			fmt.Fprintf(&h, "Subnet = %s/%d\n", m.vpn, m.vpn.BitLen())
		}
		if key != "" {
			h.WriteString("\n" + key + "\n")
		}
		files[filepath.Join("hosts", m.name)] = []byte(h.String())
	}
	if !selfListed {
		files[filepath.Join("hosts", n.self)] = []byte(fmt.Sprintf("# Managed by brine.\nSubnet = %s/%d\n\n%s\n", n.addr.Addr(), n.addr.Addr().BitLen(), pub))
	}
	files["tinc-up"] = []byte(fmt.Sprintf("#!/bin/sh\n# Managed by brine.\nip link set \"$INTERFACE\" up\nip addr replace %s dev \"$INTERFACE\"\n", n.addr))
	files["tinc-down"] = []byte(fmt.Sprintf("#!/bin/sh\n# Managed by brine.\nip addr del %s dev \"$INTERFACE\" 2>/dev/null\nip link set \"$INTERFACE\" down\n", n.addr))
	return files, core
}

// tincPlan is what the check found.
type tincPlan struct {
	diff    []string
	warn    []string // shown with a diff, never a diff by themselves
	newKey  bool
	write   map[string][]byte // by path under the network directory
	remove  []string          // hosts files of members that left
	restart bool              // tinc.conf (beyond ConnectTo) or tinc-up/down changed
	reload  bool              // members changed
	start   bool
	stop    bool
	pid     int
	bootAdd bool
}

func (n *tincNet) plan() (*tincPlan, error) {
	p := &tincPlan{write: map[string][]byte{}}
	pub, err := n.publicKey()
	if err != nil {
		return nil, err
	}
	if pub == "" {
		p.newKey = true
		p.diff = append(p.diff, fmt.Sprintf("+ generate a %d-bit RSA key pair in %s", n.keySize, n.path("rsa_key.priv")))
		pub = "(public key generated on apply)"
	}
	files, core := n.files(pub)
	names := make([]string, 0, len(files))
	for f := range files {
		names = append(names, f)
	}
	sort.Strings(names)
	for _, f := range names {
		have, err := os.ReadFile(n.path(f))
		if err != nil && !os.IsNotExist(err) {
			return nil, err
		}
		want := files[f]
		if bytes.Equal(have, want) {
			if strings.HasPrefix(f, "tinc-") {
				if st, err := os.Stat(n.path(f)); err == nil && st.Mode().Perm()&0o111 == 0 {
					p.write[f] = want
					p.diff = append(p.diff, "~ "+n.path(f)+": not executable")
				}
			}
			continue
		}
		p.write[f] = want
		p.diff = append(p.diff, textdiff.Content(n.path(f), have, want))
		switch {
		case f == "tinc.conf":
			if !strings.HasPrefix(string(have), core) {
				p.restart = true
			} else {
				p.reload = true
			}
		case strings.HasPrefix(f, "tinc-"):
			p.restart = true
		default:
			p.reload = true
		}
	}
	for _, m := range n.members {
		if m.name != n.self && m.publicKey == "" {
			p.warn = append(p.warn, fmt.Sprintf("! member %s has no public key yet: tincd cannot authenticate it until it has one", m.name))
		}
	}
	entries, err := os.ReadDir(n.path("hosts"))
	if err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	for _, e := range entries {
		f := filepath.Join("hosts", e.Name())
		if _, ok := files[f]; !ok && !e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			p.remove = append(p.remove, f)
			p.reload = true
			p.diff = append(p.diff, "- "+n.path(f)+" (no longer a member)")
		}
	}
	if daemon.Systemd() {
		return p, n.planSystemd(p)
	}
	pid, running := n.daemonPid()
	p.pid = pid
	switch {
	case n.running && !running:
		p.start = true
		p.diff = append(p.diff, fmt.Sprintf("~ tincd -n %s: not running -> running", n.net))
	case !n.running && running:
		p.stop = true
		p.diff = append(p.diff, fmt.Sprintf("~ tincd -n %s: running (pid %d) -> stopped", n.net, pid))
	case running && p.restart:
		p.diff = append(p.diff, fmt.Sprintf("~ tincd -n %s: restart (pid %d)", n.net, pid))
	case running && p.reload:
		p.diff = append(p.diff, fmt.Sprintf("~ tincd -n %s: reload (SIGHUP to pid %d)", n.net, pid))
	}
	if n.running {
		boot, _ := os.ReadFile(filepath.Join(tincRoot, "/etc/tinc/nets.boot"))
		if !slices.Contains(strings.Fields(string(boot)), n.net) {
			p.bootAdd = true
			p.diff = append(p.diff, fmt.Sprintf("+ /etc/tinc/nets.boot: %s (started at boot)", n.net))
		}
	}
	return p, nil
}

// daemonPid reads the pidfile and checks that the process is a live tincd.
func (n *tincNet) daemonPid() (int, bool) {
	return daemon.Live(filepath.Join(tincRoot, n.pidfile), func(cmdline []string) bool {
		return len(cmdline) > 0 && strings.Contains(filepath.Base(cmdline[0]), "tincd")
	})
}

func (n *tincNet) unit() string { return "tinc@" + n.net }

func (n *tincNet) planSystemd(p *tincPlan) error {
	active := daemon.UnitActive(n.unit())
	// tinc@NET is wanted by tinc.service, which is what boots the nets: both must be enabled.
	enabled := daemon.UnitEnabled(n.unit()) && daemon.UnitEnabled("tinc.service")
	switch {
	case n.running && (!active || !enabled):
		p.start = true
		p.diff = append(p.diff, fmt.Sprintf("~ %s: active %t, enabled %t -> active, enabled", n.unit(), active, enabled))
	case !n.running && (active || enabled):
		p.stop = true
		p.diff = append(p.diff, fmt.Sprintf("~ %s: active %t, enabled %t -> stopped, disabled", n.unit(), active, enabled))
	case active && p.restart:
		p.diff = append(p.diff, "~ "+n.unit()+": restart")
	case active && p.reload:
		p.diff = append(p.diff, "~ "+n.unit()+": reload")
	}
	p.pid = map[bool]int{true: 1}[active] // non-zero: running
	return nil
}

func (n *tincNet) Check(ctx context.Context, env *states.Env) (string, error) {
	p, err := n.plan()
	if err != nil {
		return "", err
	}
	if len(p.diff) == 0 {
		return "", nil
	}
	return strings.Join(append(p.diff, p.warn...), "\n"), nil
}

func (n *tincNet) Apply(ctx context.Context, env *states.Env) error {
	p, err := n.plan()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(n.path("hosts"), 0o755); err != nil {
		return err
	}
	if p.newKey {
		k, err := rsa.GenerateKey(rand.Reader, n.keySize)
		if err != nil {
			return fmt.Errorf("generate key: %w", err)
		}
		priv := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
		if err := atomicfile.Write(n.path("rsa_key.priv"), priv, 0o600); err != nil {
			return err
		}
		// The files that carry the public key are recomputed with the real one.
		if p, err = n.plan(); err != nil {
			return err
		}
	}
	for f, data := range p.write {
		mode := os.FileMode(0o644)
		if strings.HasPrefix(f, "tinc-") {
			mode = 0o755
		}
		if err := atomicfile.Write(n.path(f), data, mode); err != nil {
			return err
		}
		if err := os.Chmod(n.path(f), mode); err != nil {
			return err
		}
	}
	for _, f := range p.remove {
		if err := os.Remove(n.path(f)); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	var restart func() error
	if daemon.Systemd() {
		if err := n.applySystemd(ctx, p); err != nil {
			return err
		}
		restart = func() error { return daemon.Systemctl(ctx, "restart", n.unit()) }
	} else {
		if err := n.applyDaemon(ctx, p); err != nil {
			return err
		}
		restart = func() error {
			if pid, ok := n.daemonPid(); ok {
				if err := n.stopDaemon(ctx, pid); err != nil {
					return err
				}
			}
			return n.startDaemon(ctx)
		}
	}
	if !n.running || !(p.start || p.restart || p.reload) {
		return nil
	}
	msg, err := n.healDataPath(ctx, restart)
	if msg != "" {
		slog.Warn("tinc_network "+n.net+": "+msg, "net", n.net)
	}
	return err
}

// applyDaemon starts, stops, restarts or reloads tincd as p says, where systemd does not run it.
func (n *tincNet) applyDaemon(ctx context.Context, p *tincPlan) error {
	if p.bootAdd {
		bp := filepath.Join(tincRoot, "/etc/tinc/nets.boot")
		boot, _ := os.ReadFile(bp)
		if len(boot) > 0 && !bytes.HasSuffix(boot, []byte("\n")) {
			boot = append(boot, '\n')
		}
		if err := atomicfile.Write(bp, append(boot, []byte(n.net+"\n")...), 0o644); err != nil {
			return err
		}
	}
	switch {
	case p.stop || (p.restart && p.pid > 0 && !p.start):
		if err := n.stopDaemon(ctx, p.pid); err != nil {
			return err
		}
		if n.running {
			return n.startDaemon(ctx)
		}
	case p.start:
		return n.startDaemon(ctx)
	case p.reload && p.pid > 0:
		// SIGALRM makes tincd try every ConnectTo now rather than at its next retry. It must
		// be handled after the HUP: tincd handles both signals in one turn of its loop, the
		// ALRM first, so sent together the redial used the old configuration (without the
		// keys that just arrived) and failed, and the next attempt came seconds later. tincd
		// logs "Got HUP signal" from its signal handler and reloads as soon as the handler
		// returns; an ALRM sent once we have read that line (a poll away) finds the reload
		// done. Were it ever still first, the next attempt follows within MaxTimeout.
		logged := logSize(n.logfile)
		if err := syscall.Kill(p.pid, syscall.SIGHUP); err != nil {
			return fmt.Errorf("reload tincd (pid %d): %w", p.pid, err)
		}
		daemon.Await(ctx, 5*time.Second, func() bool { return loggedSince(n.logfile, logged, "Got HUP signal") })
		_ = syscall.Kill(p.pid, syscall.SIGALRM)
		// The members of a fresh mesh reload at about the same moment in the same apply, and a
		// member that does not hold our key yet when our dial reaches it "tarpits" the
		// connection (tinc 1.0 keeps such a socket open and silent): our tincd waits for an
		// answer until its PingTimeout, 5 s later. A member that holds our key answers our ID
		// with its own within milliseconds. So, for a few seconds at most, until each member we
		// dial has answered: a dial that got no answer for tarpitAfter is destroyed (tincd reads
		// an error and schedules its next attempt), and a member we hold no connection to is
		// asked for again at once (an ALRM, every quarter second at most). A member that is down costs this apply that
		// bound, not the mesh its back-off.
		want := n.dialled()
		last := time.Now()
		daemon.Await(ctx, redialFor, func() bool {
			dials, err := tcpDials(want)
			if err != nil {
				return true // no socket diagnostics: tincd's own retries close the mesh
			}
			done := true
			for _, a := range want {
				answered := false
				for _, d := range dials[a] {
					switch {
					case d.received > 0:
						answered = true
					case d.acked > 1 && d.idle >= tarpitAfter:
						_ = d.destroy()
					}
				}
				if answered {
					continue
				}
				done = false
				if len(dials[a]) == 0 && time.Since(last) >= 250*time.Millisecond {
					_ = syscall.Kill(p.pid, syscall.SIGALRM)
					last = time.Now()
				}
			}
			return done
		})
	}
	return nil
}

// tarpitAfter is how long a dial may wait for the member's answer to our ID before we take it for
// tarpitted: the member reads its host file of us and answers in milliseconds when it has our key.
const tarpitAfter = 500 * time.Millisecond

// dials reports whether this host's tincd dials member m (the rule is in files).
func (n *tincNet) dials(selfAddress string, m tincMember) bool {
	return m.name != n.self && m.address != "" && (selfAddress == "" || n.self < m.name)
}

// dialled returns the addresses (ip:port) of the members this host dials, for those whose
// address is an IP.
func (n *tincNet) dialled() []netip.AddrPort {
	selfAddress := ""
	for _, m := range n.members {
		if m.name == n.self {
			selfAddress = m.address
		}
	}
	var out []netip.AddrPort
	for _, m := range n.members {
		if ip, err := netip.ParseAddr(m.address); err == nil && n.dials(selfAddress, m) {
			out = append(out, netip.AddrPortFrom(ip.Unmap(), uint16(n.port)))
		}
	}
	return out
}

func logSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// loggedSince reports whether path holds line past offset (where it ended before we signalled).
func loggedSince(path string, offset int64, line string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || st.Size() < offset {
		offset = 0 // rotated
	}
	buf, err := io.ReadAll(io.NewSectionReader(f, offset, 1<<20))
	return err == nil && bytes.Contains(buf, []byte(line))
}

func (n *tincNet) stopDaemon(ctx context.Context, pid int) error {
	return daemon.Stop(ctx, fmt.Sprintf("tincd -n %s", n.net), pid, 10*time.Second)
}

// startDaemon starts tincd, which detaches itself, and waits for its pidfile to name a live
// tincd. Its standard streams are /dev/null, so it holds no pipe of ours open.
func (n *tincNet) startDaemon(ctx context.Context) error {
	os.Remove(filepath.Join(tincRoot, n.pidfile))
	// Output to a file, not a pipe: the detached daemon inherits it and would hold a pipe open.
	out, err := os.CreateTemp("", "brine-tincd-*")
	if err != nil {
		return err
	}
	defer os.Remove(out.Name())
	defer out.Close()
	cmd := exec.CommandContext(ctx, "tincd", "-n", n.net, "--pidfile="+n.pidfile, "--logfile="+n.logfile)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		msg, _ := os.ReadFile(out.Name())
		log, _ := os.ReadFile(n.logfile)
		return fmt.Errorf("start tincd -n %s: %v: %s %s", n.net, err, strings.TrimSpace(string(msg)), daemon.TailLines(string(log), 5))
	}
	if daemon.Await(ctx, 10*time.Second, func() bool { _, ok := n.daemonPid(); return ok }) {
		return nil
	}
	log, _ := os.ReadFile(n.logfile)
	return fmt.Errorf("tincd -n %s did not stay up: %s", n.net, daemon.TailLines(string(log), 5))
}

func (n *tincNet) applySystemd(ctx context.Context, p *tincPlan) error {
	run := func(args ...string) error { return daemon.Systemctl(ctx, args...) }
	switch {
	case p.stop:
		return run("disable", "--now", n.unit())
	case p.start:
		if err := run("enable", "tinc.service", n.unit()); err != nil {
			return err
		}
		if p.restart || p.reload {
			return run("restart", n.unit())
		}
		return run("start", n.unit())
	case p.restart:
		return run("restart", n.unit())
	case p.reload:
		return run("reload", n.unit())
	}
	return nil
}

// Facts returns the public key of every tinc network on this host, for the minion's facts:
// {"tinc_pubkey": {"NET": "-----BEGIN RSA PUBLIC KEY-----..."}}, read from
// /etc/tinc/NET/hosts/<Name of NET>. Networks without a key yet are left out.
func Facts() map[string]any {
	keys := map[string]any{}
	confs, _ := filepath.Glob(filepath.Join(tincRoot, "/etc/tinc/*/tinc.conf"))
	for _, c := range confs {
		data, err := os.ReadFile(c)
		if err != nil {
			continue
		}
		name := ""
		for _, l := range strings.Split(string(data), "\n") {
			k, v, ok := strings.Cut(l, "=")
			if ok && strings.EqualFold(strings.TrimSpace(k), "Name") {
				name = strings.TrimSpace(v)
			}
		}
		if !tincNameRE.MatchString(name) {
			continue
		}
		host, err := os.ReadFile(filepath.Join(filepath.Dir(c), "hosts", name))
		if err != nil {
			continue
		}
		if i := bytes.Index(host, []byte("-----BEGIN RSA PUBLIC KEY-----")); i >= 0 {
			if blk, _ := pem.Decode(host[i:]); blk != nil {
				keys[filepath.Base(filepath.Dir(c))] = strings.TrimSpace(string(pem.EncodeToMemory(blk)))
			}
		}
	}
	return map[string]any{"tinc_pubkey": keys}
}
