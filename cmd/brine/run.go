package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/brinecm/brine/control"
	"github.com/brinecm/brine/internal/termtext"
	"github.com/brinecm/brine/internal/wire"
)

func newRunCmd() *cobra.Command {
	var (
		cf      controlFlags
		asJSON  bool
		siteDir string
		timeout time.Duration
		ro      control.Rollout
	)
	c := &cobra.Command{
		Use:   "run TARGET -- COMMAND...",
		Short: "Run a shell command on the minions a target names, through the master",
		Long: `Run hands COMMAND to the local master, which signs it as a job like any other and publishes it
to the minions TARGET resolves to. Each minion runs it with /bin/sh -c, as the minion's user, in
its own process group, killed when --timeout passes, and returns its exit status with the first
64 KiB of stdout and of stderr (the output says how much more there was). The results are kept
in the job history (brine jobs show JID).

Only the operator, on the master's control socket, can start a run: nothing a minion sends can.

Exit status: 0 when the command exited 0 on every minion, 2 when it failed, timed out or a minion
did not return, 1 when nothing was sent.`,
		Example: `  brine run '*' -- uptime
  brine run 'group:app' --timeout 30s -- systemctl is-active nginx
  brine run 'web*' --batch 1 --json -- 'df -h / | tail -1'`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if dash := cmd.ArgsLenAtDash(); dash != 1 {
				return withCode(exitNothing, fmt.Errorf("write the command after --: brine run TARGET -- COMMAND..."))
			}
			req := control.RunRequest{Target: args[0], Command: strings.Join(args[1:], " "), Timeout: timeout, Rollout: ro}
			var err error
			if req.SiteRef, err = siteRef(siteDir); err != nil {
				return err
			}
			return runJob(cmd, &cf, func(ctx context.Context, cl *control.Client, on func(control.Event)) error {
				return cl.Run(ctx, req, on)
			}, asJSON, false)
		},
	}
	cf.register(c)
	c.Flags().BoolVar(&asJSON, "json", false, "print events as JSON lines")
	c.Flags().StringVar(&siteDir, "site", "", "a states tree whose site.hcl groups the target may name (default: site in master.hcl)")
	c.Flags().DurationVar(&timeout, "timeout", 0, "kill the command after this long (default: the master's job_timeout)")
	c.Flags().StringVar(&ro.Batch, "batch", "", "run on N minions (or N% of the target) at a time, batch after batch")
	c.Flags().StringVar(&ro.Canary, "canary", "", "a target that runs first, alone; if it fails there, nothing else runs")
	c.Flags().IntVar(&ro.MaxFailures, "max-failures", 0, "with --batch: stop once more than this many minions failed")
	return c
}

// printRunReturn prints a run job's return: status, then stdout and stderr indented, with
// control characters from the minion escaped (DESIGN.md invariant 22).
func printRunReturn(w io.Writer, r wire.Return) {
	var rep wire.RunReport
	if len(r.Report) == 0 || json.Unmarshal(r.Report, &rep) != nil {
		fmt.Fprintf(w, "%s: failed: %s\n", r.Minion, escapeOutput(r.Error))
		return
	}
	status := fmt.Sprintf("exit %d", rep.ExitCode)
	if rep.TimedOut {
		status = "timed out, killed"
	}
	fmt.Fprintf(w, "%s: %s (%s)\n", r.Minion, status, rep.Duration.Round(time.Millisecond))
	for _, s := range []struct {
		name    string
		text    string
		dropped int64
	}{{"stdout", rep.Stdout, rep.StdoutTruncated}, {"stderr", rep.Stderr, rep.StderrTruncated}} {
		if s.text == "" && s.dropped == 0 {
			continue
		}
		if s.name == "stderr" {
			fmt.Fprintf(w, "  stderr:\n")
		}
		for _, l := range strings.SplitAfter(strings.TrimSuffix(s.text, "\n"), "\n") {
			fmt.Fprintf(w, "    %s\n", escapeOutput(strings.TrimSuffix(l, "\n")))
		}
		if s.dropped > 0 {
			fmt.Fprintf(w, "    [%s truncated: %d more bytes not kept]\n", s.name, s.dropped)
		}
	}
}

// escapeOutput shows control characters (and invalid UTF-8) of one line of text from a minion
// as escapes (termtext.Escape, and a newline as \n), so that it cannot drive the operator's
// terminal or start a line of its own; tabs stay.
func escapeOutput(s string) string {
	return termtext.Escape(strings.ReplaceAll(s, "\n", `\n`))
}

func init() { rootCmd.AddCommand(newRunCmd()) }
