package capture

import (
	"fmt"
	"strings"
)

// readme explains the capture: what it holds, what it left out, and what the operator must
// provide (secrets) before applying it elsewhere. It names no time, so that two captures of
// the same state are the same bundle.
func (c *capturer) readme(sum *Summary) []byte {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("# Capture of %s", c.opts.Hostname)
	w("")
	w("Written by `brine local capture`. Review it before use: configuration files can hold")
	w("passwords that no rule recognises as secrets. Plan it on the host it came from (no changes")
	w("expected), then apply it elsewhere:")
	w("")
	w("    brine local plan DIR --secrets-file secrets.hcl")
	w("    brine local apply DIR --secrets-file secrets.hcl   # on a fresh host")
	w("")
	w("| file | what |")
	w("|---|---|")
	w("| packages.hcl | %d packages installed by hand, pinned to the captured versions (`--var pin_versions=false` takes any) |", sum.Packages)
	w("| files.hcl, files/ | %d files (%d templates with host values) and %d symlinks under /etc |", sum.Files, sum.Templates, sum.Links)
	w("| secrets.hcl | %d secrets, as `secret(\"PATH\")` references: their bytes were not copied |", len(sum.Secrets))
	w("| services.hcl | %d systemd services |", sum.Services)
	w("| users.hcl | %d users and %d groups (guarded `exec`: brine has no user resource) |", sum.Users, sum.Groups)
	w("| firewall.hcl | %d iptables chains, %d ufw rules |", sum.Chains, sum.UfwRules)
	w("| variables.hcl | the host name and addresses, as variables |")
	if len(sum.Secrets) > 0 {
		w("")
		w("## Secrets")
		w("")
		w("Each of these files is declared with `content = secret(\"PATH\")`. Put their content in the")
		w("master's secrets file, or for `brine local` in a file given with `--secrets-file`:")
		w("")
		for _, s := range sum.Secrets {
			w("    secret %q { value = <<EOT ... EOT }", s)
		}
	}
	w("")
	w("## Left out")
	w("")
	w("- Paths matching the exclude list (host identity, generated files, users' databases,")
	w("  brine's own configuration), SSH host keys among them: a fresh host makes its own. To keep")
	w("  them, declare them as files with `secret(...)` content. The list:")
	w("  `%s`.", strings.Join(DefaultExcludes, "` `"))
	if len(c.opts.Exclude) > 0 {
		w("  Added with --exclude: `%s`.", strings.Join(c.opts.Exclude, "` `"))
	}
	w("- Files owned by a package and not changed, and unowned files identical to a file a package")
	w("  ships (copies made by maintainer scripts): the packages make them again.")
	w("- Password hashes of users.")
	for _, n := range c.notes {
		w("- %s", n)
	}
	return []byte(b.String())
}
