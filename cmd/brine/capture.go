package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/brinecm/brine/capture"
	"github.com/brinecm/brine/control"
	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/states"
)

// newLocalCaptureCmd is `brine local capture`: this host as a bundle.
func newLocalCaptureCmd() *cobra.Command {
	var out string
	var opts capture.Options
	var asJSON bool
	c := &cobra.Command{
		Use:   "capture --out DIR",
		Short: "Write a bundle that reproduces this host: packages, services, /etc, firewall, users",
		Long: `Capture reads this host and writes a bundle (into DIR, which must not exist or be empty):
packages installed by hand with their versions, systemd services enabled or running, files under
/etc that differ from their package's or that no package owns, iptables chains, ufw rules, tinc
networks' files, and the users and groups that are not system ones. Private keys are never
copied: they become secret("PATH") references. The host name and addresses become variables.
Plan the result on this host: it shows no changes.`,
		Example: `  brine local capture --out ./web1
  brine local plan ./web1 --secrets-file web1-secrets.hcl   # no changes
  brine local capture --out ./web1 --exclude '/etc/nginx/cache/' --max-file-size 1048576`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return withCode(exitNothing, fmt.Errorf("--out DIR is required"))
			}
			ctx, stop := signalContext()
			defer stop()
			res, err := capture.Capture(ctx, opts)
			if err != nil {
				return withCode(exitNothing, err)
			}
			if err := res.WriteDir(out); err != nil {
				return withCode(exitNothing, err)
			}
			s := res.Summary
			if asJSON {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(s)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Captured %s into %s in %s: %d packages, %d files (%d templates), %d links, %d secrets, %d services, %d users, %d groups, %d iptables chains, %d ufw rules; %d files, %d bytes\n",
				s.Host, out, s.DurationNS.Round(time.Millisecond), s.Packages, s.Files, s.Templates, s.Links, len(s.Secrets), s.Services, s.Users, s.Groups, s.Chains, s.UfwRules, len(res.Files), s.Bytes)
			for _, sec := range s.Secrets {
				fmt.Fprintf(cmd.OutOrStdout(), "  secret %s: not copied, give it with --secrets-file or the master's secrets file\n", sec)
			}
			if len(s.Notes) > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "  %d notes on what was left out: see %s/README.md\n", len(s.Notes), out)
			}
			return nil
		},
	}
	c.Flags().StringVar(&out, "out", "", "directory to write the bundle into (must not exist or be empty)")
	c.Flags().Int64Var(&opts.MaxFileSize, "max-file-size", capture.DefaultMaxFileSize, "leave out files under /etc larger than this many bytes")
	c.Flags().IntVar(&opts.MaxFiles, "max-files", capture.DefaultMaxFiles, "fail when more files than this are to be captured")
	c.Flags().StringArrayVar(&opts.Exclude, "exclude", nil, "also leave out paths matching this pattern (path.Match; a trailing / names a directory; repeatable)")
	c.Flags().BoolVar(&asJSON, "json", false, "print the summary as JSON")
	return c
}

// newCaptureCmd is `brine capture`: the minions a target names capture themselves, and the CLI
// writes a site tree of what they share and what each has of its own.
func newCaptureCmd() *cobra.Command {
	var (
		cf      controlFlags
		out     string
		siteDir string
		spec    wire.CaptureSpec
		timeout time.Duration
		asJSON  bool
	)
	c := &cobra.Command{
		Use:   "capture TARGET --out DIR",
		Short: "Capture the minions a target names as a site: a common bundle, one bundle per host, site.hcl",
		Long: `Capture has the master sign a capture job for the minions TARGET names; each captures itself as
` + "`brine local capture`" + ` does (private keys become secret() references and never leave the host) and
returns the bundle. Capture then writes a site into DIR (which must not exist or be empty):
common/ with the blocks every host's capture holds identically, one directory per minion id with
the rest, and site.hcl assigning common to all and each host its own. A group that two captured
hosts or more have, but not all, gets a bundle group-NAME of the blocks its captured hosts hold
identically: the master's key groups and the site's groups, resolved by the master as converge
resolves them. Converging that site on the same hosts changes nothing.

With --site SITE, or when DIR already holds a site.hcl, the capture joins that site: its groups
name the target and shape the split, and the site.hcl written keeps its groups and assigns and
adds the captured bundles' assigns after them. DIR may be SITE itself (the bundles are added
next to its own, none is overwritten, site.hcl is replaced last), or a new directory, which then
gets a copy of SITE's bundles too. A captured bundle that would take the name of one of the
site's stops the capture before anything is written. The site's assigns stay as they are: a
captured host they already give bundles to gets those too when converged.

The captures are kept in the job history like any return (brine jobs show JID). Exit status: 0
when every minion was captured and the site written, 2 when a minion failed or did not return
(the others are not written), 1 when nothing was sent.`,
		Example: `  brine capture 'legacy*' --out ./site
  brine converge --site ./site --dry-run   # 0 to change on the captured hosts
  brine capture web1,web2 --out ./site --exclude '/etc/nginx/cache/' --max-file-size 1048576
  brine capture 'group:legacy' --site /etc/brine/states --out ./states-new   # SITE's groups, SITE's bundles too`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return withCode(exitNothing, fmt.Errorf("--out DIR is required"))
			}
			if siteDir == "" {
				if _, err := os.Stat(filepath.Join(out, states.SiteFile)); err == nil {
					siteDir = out
				}
			}
			inPlace := siteDir != "" && sameDir(siteDir, out)
			if ents, err := os.ReadDir(out); err == nil && len(ents) > 0 && !inPlace {
				return withCode(exitNothing, fmt.Errorf("%s is not empty", out))
			}
			var site map[string][]byte // the site the capture joins, nil: none
			var ref control.SiteRef
			if siteDir != "" {
				var err error
				if ref, err = siteRef(siteDir); err != nil {
					return err
				}
				tree, err := states.ReadBundle(siteDir)
				if err != nil {
					return withCode(exitNothing, fmt.Errorf("--site: %w", err))
				}
				site = tree.Files
			}
			cl, err := cf.client()
			if err != nil {
				return withCode(exitNothing, err)
			}
			ctx, stop := signalContext()
			defer stop()
			req := control.CaptureRequest{Target: args[0], Timeout: timeout, Capture: &spec, SiteRef: ref}
			w := cmd.OutOrStdout()
			hosts := map[string]map[string][]byte{}
			sums := map[string]capture.Summary{}
			var failed, missing []string
			sent := false
			err = cl.Capture(ctx, req, func(ev control.Event) {
				switch ev.Event {
				case "published":
					sent = true
				case "missing":
					missing = append(missing, ev.Missing...)
				case "return":
					if ev.Return == nil {
						return
					}
					id := ev.Return.Minion
					files, sum, err := captureReturn(*ev.Return)
					if err != nil {
						failed = append(failed, id)
						fmt.Fprintf(w, "%s: failed: %s\n", id, escapeOutput(err.Error()))
						return
					}
					hosts[id], sums[id] = files, sum
					if !asJSON {
						fmt.Fprintf(w, "%s: captured %d packages, %d files, %d secrets, %d services, %d iptables chains, %d ufw rules (%d bytes)\n",
							id, sum.Packages, sum.Files, len(sum.Secrets), sum.Services, sum.Chains, sum.UfwRules, sum.Bytes)
					}
				}
			})
			if err != nil {
				if sent {
					return withCode(exitFailed, err)
				}
				return withCode(exitNothing, err)
			}
			for _, id := range missing {
				fmt.Fprintf(w, "%s: no return\n", id)
			}
			if len(failed) > 0 || len(missing) > 0 || len(hosts) == 0 {
				return withCode(exitFailed, fmt.Errorf("%d failed, %d did not return: nothing written", len(failed), len(missing)))
			}
			groups, err := minionGroups(ctx, cl, args[0], ref)
			if err != nil {
				return withCode(exitFailed, fmt.Errorf("the minions' groups: %w", err))
			}
			tree, err := capture.Split(hosts, groups, site)
			if err != nil {
				return withCode(exitFailed, err)
			}
			if inPlace {
				err = capture.WriteInto(out, tree, site)
			} else {
				err = capture.WriteFiles(out, tree)
			}
			if err != nil {
				return withCode(exitFailed, err)
			}
			if asJSON {
				return json.NewEncoder(w).Encode(map[string]any{"out": out, "hosts": sums, "files": len(tree)})
			}
			fmt.Fprintf(w, "Wrote the site of %d hosts into %s (%d files): %s/site.hcl\n", len(hosts), out, len(tree), out)
			return nil
		},
	}
	cf.register(c)
	c.Flags().StringVar(&out, "out", "", "directory to write the site into (must not exist or be empty, or be the site)")
	c.Flags().StringVar(&siteDir, "site", "", "the site the capture joins: its groups, assigns and bundles (default: DIR when it holds a site.hcl)")
	c.Flags().Int64Var(&spec.MaxFileSize, "max-file-size", capture.DefaultMaxFileSize, "leave out files under /etc larger than this many bytes")
	c.Flags().IntVar(&spec.MaxFiles, "max-files", capture.DefaultMaxFiles, "fail on a host where more files than this are to be captured")
	c.Flags().StringArrayVar(&spec.Exclude, "exclude", nil, "also leave out paths matching this pattern (path.Match; a trailing / names a directory; repeatable)")
	c.Flags().DurationVar(&timeout, "timeout", 0, "how long to wait for the captures (default: the master's job_timeout)")
	c.Flags().BoolVar(&asJSON, "json", false, "print the hosts' summaries as JSON")
	return c
}

// minionGroups are the groups of the minions target names, as the master resolves them with
// the site ref's groups (the master's configured site when ref is empty): key groups, then
// site groups.
func minionGroups(ctx context.Context, cl *control.Client, target string, ref control.SiteRef) (map[string][]string, error) {
	r, err := cl.Status(ctx, control.StatusRequest{Target: target, SiteRef: ref})
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, m := range r.Minions {
		out[m.ID] = m.Groups
	}
	return out, nil
}

// sameDir says whether a and b name one directory (b may not exist yet).
func sameDir(a, b string) bool {
	sa, err1 := os.Stat(a)
	sb, err2 := os.Stat(b)
	if err1 == nil && err2 == nil {
		return os.SameFile(sa, sb)
	}
	return filepath.Clean(a) == filepath.Clean(b)
}

// captureReturn checks one minion's capture return: what a minion sends is bounded, its paths
// stay inside its own bundle and its HCL is bounded (capture.CheckBundle), and the tree is checked again when
// written (capture.WriteFiles).
func captureReturn(r wire.Return) (map[string][]byte, capture.Summary, error) {
	var sum capture.Summary
	if !r.Success {
		return nil, sum, errors.New(cmp.Or(r.Error, "the capture failed"))
	}
	var rep wire.CaptureReport
	if err := json.Unmarshal(r.Report, &rep); err != nil {
		return nil, sum, fmt.Errorf("unreadable capture: %w", err)
	}
	total := 0
	for _, b := range rep.Files {
		total += len(b)
	}
	if total > wire.MaxCaptureFiles || len(rep.Files) == 0 {
		return nil, sum, fmt.Errorf("the capture holds %d files of %d bytes: want 1 to %d bytes", len(rep.Files), total, wire.MaxCaptureFiles)
	}
	if err := capture.CheckBundle(rep.Files); err != nil {
		return nil, sum, fmt.Errorf("the capture is refused: %w", err)
	}
	_ = json.Unmarshal(rep.Summary, &sum)
	return rep.Files, sum, nil
}

func init() { rootCmd.AddCommand(newCaptureCmd()) }
