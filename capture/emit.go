package capture

import (
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/v2/hclwrite"
	"github.com/zclconf/go-cty/cty"
)

// quote returns s as an HCL quoted string literal (with ${ and %{ escaped).
func quote(s string) string {
	return string(hclwrite.TokensForValue(cty.StringVal(s)).Bytes())
}

// quoteParts returns an HCL quoted template: literal parts escaped, host values as
// ${local.NAME}.
func quoteParts(parts []part) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, p := range parts {
		if p.v == nil {
			q := quote(p.text)
			b.WriteString(q[1 : len(q)-1])
			continue
		}
		b.WriteString("${local." + p.v.name + "}")
	}
	b.WriteByte('"')
	return b.String()
}

// hostString is s as an HCL expression, with host values as locals.
func (c *capturer) hostString(s string) string { return quoteParts(c.host.split(s)) }

// shellQuote quotes s for /bin/sh.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// sourcePath is where the content of the host file p goes in the bundle. A bundle leaves out
// hidden files, so a name starting with "." is stored as "%2e..." (and "%" as "%25").
func sourcePath(p string) string {
	parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
	for i, s := range parts {
		s = strings.ReplaceAll(s, "%", "%25")
		if strings.HasPrefix(s, ".") {
			s = "%2e" + s[1:]
		}
		parts[i] = s
	}
	return "files/" + strings.Join(parts, "/")
}

type hclFile struct {
	b strings.Builder
}

func (f *hclFile) line(format string, args ...any) { fmt.Fprintf(&f.b, format+"\n", args...) }

func (f *hclFile) comment(text string) {
	for _, l := range strings.Split(text, "\n") {
		f.line("# %s", l)
	}
}

func (f *hclFile) bytes() []byte { return hclwrite.Format([]byte(f.b.String())) }

// refList renders a list of resource addresses.
func refList(refs []string) string { return "[" + strings.Join(refs, ", ") + "]" }

func addr(typ, name string) string {
	if hclIdent(name) {
		return typ + "." + name
	}
	return typ + "[" + quote(name) + "]"
}

func hclIdent(s string) bool {
	if s == "" || s[0] >= '0' && s[0] <= '9' || s[0] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '_' || ch == '-') {
			return false
		}
	}
	return true
}

// emit writes every part of the bundle into c.out.
func (c *capturer) emit(files []etcFile, users []user, groups []group, fw *firewall, services []service, sum *Summary) {
	manual := map[string]bool{}
	for _, p := range c.db.manual {
		manual[p] = true
	}
	// Users and groups first: files may be owned by them.
	userRefs := map[string]string{} // user or group name -> exec address that makes it
	if len(users)+len(groups) > 0 {
		var f hclFile
		f.comment("Users and groups that are not system ones (uid/gid 1000-59999), captured from /etc/passwd and /etc/group.\n" +
			"brine has no user resource: each is made by a guarded exec, which does nothing where the\n" +
			"name exists already (changes to an existing account are not reconciled). Password hashes\n" +
			"are not copied: new accounts are locked until a password or an SSH key is set.")
		for _, g := range groups {
			a := "group:" + g.name
			userRefs["g:"+g.name] = addr("exec", a)
			f.line("")
			f.line("exec %s {", quote(a))
			f.line("  command = %s", quote(fmt.Sprintf("groupadd -g %d %s", g.gid, shellQuote(g.name))))
			f.line("  unless  = %s", quote("getent group "+shellQuote(g.name)))
			f.line("}")
			sum.Groups++
		}
		for _, u := range users {
			a := "user:" + u.name
			userRefs["u:"+u.name] = addr("exec", a)
			args := []string{"useradd", "-u", strconv.Itoa(u.uid)}
			var deps []string
			if g, ok := c.ids.gname[u.gid]; ok {
				args = append(args, "-g", shellQuote(g))
				if ref, ok := userRefs["g:"+g]; ok {
					deps = append(deps, ref)
				}
			} else {
				args = append(args, "-g", strconv.Itoa(u.gid))
			}
			if len(u.supplementary) > 0 {
				args = append(args, "-G", shellQuote(strings.Join(u.supplementary, ",")))
				for _, g := range u.supplementary {
					if ref, ok := userRefs["g:"+g]; ok && !slices.Contains(deps, ref) {
						deps = append(deps, ref)
					}
				}
			}
			args = append(args, "-d", shellQuote(u.home), "-s", shellQuote(u.shell))
			if u.gecos != "" {
				args = append(args, "-c", shellQuote(u.gecos))
			}
			if c.exists(u.home) {
				args = append(args, "-m")
			} else {
				args = append(args, "-M")
			}
			args = append(args, shellQuote(u.name))
			f.line("")
			f.line("exec %s {", quote(a))
			f.line("  command = %s", quote(strings.Join(args, " ")))
			f.line("  unless  = %s", quote("getent passwd "+shellQuote(u.name)))
			if len(deps) > 0 {
				f.line("  depends_on = %s", refList(deps))
			}
			f.line("}")
			sum.Users++
		}
		c.out["users.hcl"] = f.bytes()
	}

	// Packages.
	aptRef := ""
	for _, ef := range files {
		if strings.HasPrefix(ef.path, "/etc/apt/") && ef.secret == "" {
			aptRef = "exec.apt_update"
		}
	}
	if len(c.db.manual) > 0 {
		var f hclFile
		f.line("variable \"packages\" {")
		f.line("  type        = map(string)")
		f.line("  description = %s", quote("The packages installed by hand (apt-mark showmanual) with the versions captured; a version \"\" takes any version."))
		f.line("  default = {")
		for _, p := range c.db.manual {
			f.line("    %s = %s", quote(p), quote(c.db.installed[p]))
		}
		f.line("  }")
		f.line("}")
		f.line("")
		f.line("variable \"pin_versions\" {")
		f.line("  type        = bool")
		f.line("  default     = true")
		f.line("  description = %s", quote("true: install exactly the captured versions; false: any version (apt's candidate where the package is missing)."))
		f.line("}")
		f.line("")
		f.line("package \"manual\" {")
		f.line("  for_each = var.packages")
		f.line("  version  = var.pin_versions ? each.value : \"\"")
		if aptRef != "" {
			f.line("  depends_on = [%s]", aptRef)
		}
		f.line("}")
		if aptRef != "" {
			f.line("")
			f.comment("The apt sources of this host are files of this bundle: a change to them refreshes apt's lists\nbefore packages are installed.")
			f.line("exec \"apt_update\" {")
			f.line("  command      = \"apt-get update\"")
			f.line("  refresh_only = true")
			f.line("}")
		}
		c.out["packages.hcl"] = f.bytes()
		sum.Packages = len(c.db.manual)
	}

	// Files, links and secrets.
	var ff, sf hclFile
	ff.comment("Files under /etc that differ from what their package ships, or that no package owns.")
	for _, ef := range files {
		var deps []string
		if ef.pkg != "" && manual[ef.pkg] && !strings.HasPrefix(ef.path, "/etc/apt/") {
			deps = append(deps, "package["+quote(ef.pkg)+"]") // an instance of package.manual
		}
		for _, k := range []string{"u:" + ef.owner, "g:" + ef.group} {
			if ref, ok := userRefs[k]; ok && !slices.Contains(deps, ref) {
				deps = append(deps, ref)
			}
		}
		meta := func(f *hclFile) {
			f.line("  mode  = %s", quote(fmt.Sprintf("%04o", uint32(ef.mode.Perm())|modeHigh(ef))))
			f.line("  owner = %s", quote(ef.owner))
			f.line("  group = %s", quote(ef.group))
			if strings.HasPrefix(ef.path, "/etc/apt/") && aptRef != "" {
				f.line("  notify = [%s]", aptRef)
			}
			if len(deps) > 0 {
				f.line("  depends_on = %s", refList(deps))
			}
		}
		switch {
		case ef.secret != "":
			sf.line("")
			sf.comment(fmt.Sprintf("%s: %s. Its bytes were not copied: give them as the secret %q\n(the master's secrets file, or brine local --secrets-file).", ef.path, ef.secret, ef.path))
			sf.line("file %s {", quote(ef.path))
			sf.line("  content = secret(%s)", quote(ef.path))
			meta(&sf)
			sf.line("}")
			sum.Secrets = append(sum.Secrets, ef.path)
		case ef.link != "":
			ff.line("")
			ff.comment(ef.path + ": " + ef.reason + "; brine has no link resource, so a guarded exec makes it.")
			ff.line("exec %s {", quote("link:"+ef.path))
			ff.line("  command = %s", quote(fmt.Sprintf("ln -sfn %s %s", shellQuote(ef.link), shellQuote(ef.path))))
			ff.line("  unless  = %s", quote(fmt.Sprintf("test \"$(readlink %s)\" = %s", shellQuote(ef.path), shellQuote(ef.link))))
			ff.line("}")
			sum.Links++
		default:
			ff.line("")
			ff.comment(ef.reason)
			ff.line("file %s {", quote(ef.path))
			var parts []part
			if isText(ef.data) {
				parts = c.host.split(string(ef.data))
			}
			if hasHostValue(parts) {
				src := sourcePath(ef.path) + ".tmpl"
				c.out[src] = []byte(template(parts, ""))
				var names []string
				for _, p := range parts {
					if p.v != nil && !slices.Contains(names, p.v.name) {
						names = append(names, p.v.name)
					}
				}
				sort.Strings(names)
				vars := make([]string, len(names))
				for i, n := range names {
					vars[i] = n + " = local." + n
				}
				ff.line("  template = %s", quote(src))
				ff.line("  vars     = { %s }", strings.Join(vars, ", "))
				sum.Templates++
			} else {
				src := sourcePath(ef.path)
				c.out[src] = ef.data
				ff.line("  source = %s", quote(src))
			}
			meta(&ff)
			ff.line("}")
			sum.Files++
		}
	}
	if len(files) > 0 {
		c.out["files.hcl"] = ff.bytes()
	}
	if len(sum.Secrets) > 0 {
		c.out["secrets.hcl"] = sf.bytes()
	}

	// Services.
	if len(services) > 0 {
		var f hclFile
		f.comment("Services enabled or running under systemd.")
		for _, s := range services {
			f.line("")
			f.line("service %s {", quote(s.name))
			if s.running {
				f.line("  state   = \"running\"")
			}
			if s.enabled {
				f.line("  enabled = true")
			}
			if len(c.db.manual) > 0 {
				f.line("  depends_on = [package.manual]")
			}
			f.line("}")
			sum.Services++
		}
		c.out["services.hcl"] = f.bytes()
	}

	if fw != nil {
		if b := c.emitFirewall(fw, sum); len(b) > 0 {
			c.out["firewall.hcl"] = b
		}
	}
	c.out["variables.hcl"] = c.emitVariables()
	c.out["README.md"] = c.readme(sum)
}

// modeHigh returns the setuid/setgid/sticky bits of a file as octal digits above the
// permissions.
func modeHigh(ef etcFile) uint32 {
	var m uint32
	if ef.mode&fs.ModeSetuid != 0 {
		m |= 0o4000
	}
	if ef.mode&fs.ModeSetgid != 0 {
		m |= 0o2000
	}
	if ef.mode&fs.ModeSticky != 0 {
		m |= 0o1000
	}
	return m
}

// emitVariables declares the host values the bundle uses, with locals that default to the
// host's own values.
func (c *capturer) emitVariables() []byte {
	var f hclFile
	f.comment("Values of the captured host that differ from host to host. Empty (the default for the\n" +
		"host name and the addresses of physical interfaces) means the value of the host the bundle is\n" +
		"applied to, from its facts; set them (--var, --var-file) to make a different host.")
	var locals []string
	vars := slices.Clone(c.host.vars)
	sort.Slice(vars, func(i, j int) bool { return vars[i].name < vars[j].name })
	for _, v := range vars {
		if !v.used {
			continue
		}
		f.line("")
		f.line("variable %s {", quote(v.name))
		f.line("  type        = string")
		if v.fromFacts != "" {
			f.line("  default     = \"\"")
			f.line("  description = %s", quote("Captured: "+v.value+"; empty: the host's own."))
			locals = append(locals, fmt.Sprintf("  %s = var.%s != \"\" ? var.%s : %s", v.name, v.name, v.name, v.fromFacts))
		} else {
			f.line("  default     = %s", quote(v.value))
			f.line("  description = %s", quote("Captured: "+v.value+" (a virtual interface's address: configuration, kept as is)."))
			locals = append(locals, fmt.Sprintf("  %s = var.%s", v.name, v.name))
		}
		f.line("}")
	}
	if len(locals) > 0 {
		f.line("")
		f.line("locals {")
		for _, l := range locals {
			f.line("%s", l)
		}
		f.line("}")
	}
	return f.bytes()
}

// emitFirewall writes the iptables chains and the ufw block.
func (c *capturer) emitFirewall(fw *firewall, sum *Summary) []byte {
	var f hclFile
	ufwOn := fw.ufw != nil && fw.ufw.enabled
	ufwChain := func(ch string) bool {
		return fw.ufw != nil && (strings.HasPrefix(ch, "ufw-") || strings.HasPrefix(ch, "ufw6-"))
	}
	for _, table := range []string{"filter", "nat", "mangle", "raw", "security"} {
		t4, t6 := fw.v4[table], fw.v6[table]
		var chains []string
		for _, t := range []*iptTable{t4, t6} {
			if t == nil {
				continue
			}
			for _, ch := range t.chains {
				if !slices.Contains(chains, ch) {
					chains = append(chains, ch)
				}
			}
		}
		builtin := builtinChains[table]
		// Custom chains before the built-in ones that jump to them.
		sort.SliceStable(chains, func(i, j int) bool {
			return !slices.Contains(builtin, chains[i]) && slices.Contains(builtin, chains[j])
		})
		custom := map[string]bool{}
		for _, ch := range chains {
			if !slices.Contains(builtin, ch) && !ufwChain(ch) && !strings.HasPrefix(ch, "BRINE-NORM-") {
				custom[ch] = true
			}
		}
		for _, ch := range chains {
			isBuiltin := slices.Contains(builtin, ch)
			if !isBuiltin && !custom[ch] {
				continue
			}
			ruleList := func(t *iptTable) ([]string, bool) {
				if t == nil || !slices.Contains(t.chains, ch) {
					return nil, false
				}
				var out []string
				for _, r := range t.rules[ch] {
					if fw.ufw != nil && (strings.Contains(r, "-j ufw-") || strings.Contains(r, "-j ufw6-") || strings.Contains(r, "-g ufw")) {
						continue // ufw's jumps: the ufw block makes them
					}
					out = append(out, r)
				}
				return out, true
			}
			r4, in4 := ruleList(t4)
			r6, in6 := ruleList(t6)
			policyManaged := isBuiltin && !(ufwOn && table == "filter")
			var p4, p6 string
			if t4 != nil {
				p4 = t4.policy[ch]
			}
			if t6 != nil {
				p6 = t6.policy[ch]
			}
			if isBuiltin {
				// A built-in chain matters only with rules or a policy other than ACCEPT.
				in4 = in4 && (len(r4) > 0 || policyManaged && p4 != "" && p4 != "ACCEPT")
				in6 = in6 && (len(r6) > 0 || policyManaged && p6 != "" && p6 != "ACCEPT")
			}
			if !in4 && !in6 {
				continue
			}
			family, policy := "both", p4
			switch {
			case !in6:
				family = "ipv4"
			case !in4:
				family, policy = "ipv6", p6
			case p4 != p6:
				c.note("iptables %s/%s: the IPv4 policy %s and the IPv6 policy %s differ; only IPv4 was captured", table, ch, p4, p6)
				family, in6 = "ipv4", false
			}
			f.line("")
			label := table + "/" + ch
			f.line("iptables_chain %s {", quote(label))
			f.line("  family = %q", family)
			if policyManaged && policy != "" {
				f.line("  policy = %q", policy)
			}
			purge := !(isBuiltin && fw.ufw != nil && table == "filter")
			f.line("  purge  = %t", purge)
			var deps []string
			rule := func(args, fam string) {
				if tgt := jumpTarget(args); custom[tgt] && tgt != ch {
					if ref := addr("iptables_chain", table+"/"+tgt); !slices.Contains(deps, ref) {
						deps = append(deps, ref)
					}
				}
				if fam == "" {
					f.line("  rule { args = %s }", c.hostString(args))
				} else {
					f.line("  rule {")
					f.line("    args   = %s", c.hostString(args))
					f.line("    family = %q", fam)
					f.line("  }")
				}
			}
			switch {
			case family == "both" && slices.Equal(r4, r6):
				for _, r := range r4 {
					rule(r, "")
				}
			case family == "both":
				for _, r := range r4 {
					rule(r, "ipv4")
				}
				for _, r := range r6 {
					rule(r, "ipv6")
				}
			case family == "ipv4":
				for _, r := range r4 {
					rule(r, "")
				}
			default:
				for _, r := range r6 {
					rule(r, "")
				}
			}
			if len(deps) > 0 {
				f.line("  depends_on = %s", refList(deps))
			}
			f.line("}")
			sum.Chains++
		}
	}
	if u := fw.ufw; u != nil {
		rules, skipped := ufwRules(u)
		for _, t := range skipped {
			c.note("ufw: rule %q cannot be declared by the ufw block (an application, source-port or route rule): not captured", t)
		}
		f.line("")
		f.comment("ufw: defaults, logging, whether it is enabled, and the whole rule set.")
		f.line("ufw {")
		for _, dir := range []string{"incoming", "outgoing", "routed"} {
			if v := u.defaults[dir]; v != "" {
				f.line("  default_%s = %q", dir, v)
			}
		}
		f.line("  logging = %q", u.logging)
		f.line("  enabled = %t", u.enabled)
		lockout := u.enabled && u.defaults["incoming"] != "allow"
		for _, r := range rules {
			if r.allowsSSH(u.sshPorts) {
				lockout = false
			}
		}
		if lockout {
			f.comment("The captured host denies incoming SSH (no rule allows it): kept as it was.")
			f.line("  allow_lockout = true")
		}
		for i, r := range rules {
			name := fmt.Sprintf("%02d-%s-%s", i+1, r.action, strings.ReplaceAll(r.port, ",", "_"))
			if r.proto != "any" {
				name += "-" + r.proto
			}
			f.line("  rule %s {", quote(name))
			f.line("    action = %q", r.action)
			if r.port != "any" {
				f.line("    port   = %q", r.port)
			}
			if r.proto != "any" {
				f.line("    proto  = %q", r.proto)
			}
			if r.from != "any" {
				f.line("    from   = %s", c.hostString(r.from))
			}
			if r.to != "any" {
				f.line("    to     = %s", c.hostString(r.to))
			}
			if r.iface != "" {
				f.line("    interface = %s", quote(r.iface))
			}
			if r.direction != "in" {
				f.line("    direction = %q", r.direction)
			}
			if r.comment != "" {
				f.line("    comment = %s", quote(r.comment))
			}
			f.line("  }")
			sum.UfwRules++
		}
		f.line("}")
	}
	if f.b.Len() == 0 {
		return nil
	}
	return f.bytes()
}

// jumpTarget is the chain a rule jumps or goes to, or "".
func jumpTarget(args string) string {
	w := strings.Fields(args)
	for i := 0; i+1 < len(w); i++ {
		if w[i] == "-j" || w[i] == "-g" || w[i] == "--jump" || w[i] == "--goto" {
			return w[i+1]
		}
	}
	return ""
}

// exists reports whether the host path p exists.
func (c *capturer) exists(p string) bool {
	_, err := os.Stat(path.Join(c.root, p))
	return err == nil
}
