package main

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/brinecm/brine/capture"
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
