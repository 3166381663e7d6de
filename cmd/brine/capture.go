package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/brinecm/brine/capture"
	"github.com/brinecm/brine/control"
	"github.com/brinecm/brine/internal/wire"
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
the rest, and site.hcl assigning common to all and each host its own. A group (of the master's
key groups) that two captured hosts or more have, but not all, gets a bundle group-NAME of the
blocks its captured hosts hold identically. Converging that site on the same hosts changes
nothing.

The captures are kept in the job history like any return (brine jobs show JID). Exit status: 0
when every minion was captured and the site written, 2 when a minion failed or did not return
(the others are not written), 1 when nothing was sent.`,
		Example: `  brine capture 'legacy*' --out ./site
  brine converge --site ./site --dry-run   # 0 to change on the captured hosts
  brine capture web1,web2 --out ./site --exclude '/etc/nginx/cache/' --max-file-size 1048576`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return withCode(exitNothing, fmt.Errorf("--out DIR is required"))
			}
			if ents, err := os.ReadDir(out); err == nil && len(ents) > 0 {
				return withCode(exitNothing, fmt.Errorf("%s is not empty", out))
			}
			cl, err := cf.client()
			if err != nil {
				return withCode(exitNothing, err)
			}
			ctx, stop := signalContext()
			defer stop()
			req := control.CaptureRequest{Target: args[0], Timeout: timeout, Capture: &spec}
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
			groups, err := acceptedGroups(ctx, cl)
			if err != nil {
				return withCode(exitFailed, fmt.Errorf("the minions' groups: %w", err))
			}
			tree, err := capture.Split(hosts, groups)
			if err != nil {
				return withCode(exitFailed, err)
			}
			if err := capture.WriteFiles(out, tree); err != nil {
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
	c.Flags().StringVar(&out, "out", "", "directory to write the site into (must not exist or be empty)")
	c.Flags().Int64Var(&spec.MaxFileSize, "max-file-size", capture.DefaultMaxFileSize, "leave out files under /etc larger than this many bytes")
	c.Flags().IntVar(&spec.MaxFiles, "max-files", capture.DefaultMaxFiles, "fail on a host where more files than this are to be captured")
	c.Flags().StringArrayVar(&spec.Exclude, "exclude", nil, "also leave out paths matching this pattern (path.Match; a trailing / names a directory; repeatable)")
	c.Flags().DurationVar(&timeout, "timeout", 0, "how long to wait for the captures (default: the master's job_timeout)")
	c.Flags().BoolVar(&asJSON, "json", false, "print the hosts' summaries as JSON")
	return c
}

// acceptedGroups are the groups of every accepted key, as the master granted them.
func acceptedGroups(ctx context.Context, cl *control.Client) (map[string][]string, error) {
	r, err := cl.KeyList(ctx, control.KeyListRequest{})
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, k := range r.Keys {
		if k.State == "accepted" {
			out[k.ID] = k.Groups
		}
	}
	return out, nil
}

// captureReturn checks one minion's capture return: what a minion sends is bounded and its
// paths are checked again when written (capture.WriteFiles).
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
	_ = json.Unmarshal(rep.Summary, &sum)
	return rep.Files, sum, nil
}

func init() { rootCmd.AddCommand(newCaptureCmd()) }
