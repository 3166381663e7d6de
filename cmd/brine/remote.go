package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/brinecm/brine/control"
	"github.com/brinecm/brine/internal/daemoncli"
	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/master"
	"github.com/brinecm/brine/states"
	"github.com/brinecm/brine/states/resources/builtin"
)

// controlFlags locate the master's control socket: --socket, else the control_socket of the
// master config (-c), else <data-dir>/master.sock.
type controlFlags struct {
	socket  string
	config  string
	dataDir string
}

func (f *controlFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.socket, "socket", os.Getenv("BRINE_SOCKET"), "the master's control socket (default <data-dir>/master.sock; env BRINE_SOCKET)")
	cmd.Flags().StringVarP(&f.config, "config", "c", "", "the master's config file, to find its control socket (default "+defaultMasterConfig+" when it exists)")
	cmd.Flags().StringVar(&f.dataDir, "data-dir", "", "the master's data dir (default "+master.DefaultDataDir+")")
}

func (f *controlFlags) client() (*control.Client, error) {
	if f.socket != "" {
		return &control.Client{Path: f.socket}, nil
	}
	cfg, diags := master.LoadConfig(daemoncli.ConfigPath(f.config, defaultMasterConfig), f.dataDir)
	if diags.HasErrors() {
		return nil, diags
	}
	return &control.Client{Path: cfg.ControlSocket}, nil
}

func newApplyCmd() *cobra.Command {
	var (
		cf      controlFlags
		bf      bundleFlags
		dryRun  bool
		timeout time.Duration
		ro      control.Rollout
		siteDir string
	)
	c := &cobra.Command{
		Use:   "apply TARGET DIR",
		Short: "Apply a bundle to the minions a target names, through the master",
		Long: `Apply reads the bundle in DIR, hands it to the local master, which validates it, signs it and
publishes it to the minions TARGET resolves to, then prints each minion's result as it returns.

Targets: a glob on the minion id (web*), a list (web1,web2), group:NAME, fact:KEY=VALUE (value
globs), combined with and, or, not and parentheses.

Exit status: 0 when every minion succeeded, 2 when a resource failed or a minion did not return,
1 when nothing was sent.`,
		Example: `  brine apply 'group:app' ./states/app
  brine apply 'web* and not web3' ./states/web --dry-run
  brine apply '(group:app or group:db) and fact:os=debian' ./states/base --var env=prod --timeout 10m
  brine apply 'group:app' ./states/app --canary web1 --batch 25% --max-failures 1`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, err := bf.options()
			if err != nil {
				return withCode(exitNothing, err)
			}
			b, err := states.ReadBundle(args[1])
			if err != nil {
				return withCode(exitNothing, err)
			}
			// What needs no minion is checked here, before anything is sent (DESIGN.md, step 1);
			// the master compiles the rest against the minions' facts.
			b.Root = filepath.Clean(args[1])
			mod, diags := states.Load(b, builtin.Types())
			if !diags.HasErrors() {
				diags = states.Check(mod, opts)
			}
			if diags.HasErrors() {
				printDiagnostics(bf.json, b, diags)
				return withCode(exitNothing, fmt.Errorf("%s: nothing was sent", args[1]))
			}
			req := control.ApplyRequest{Target: args[0], Bundle: b.Marshal(), DryRun: dryRun,
				Timeout: timeout, Vars: opts.Vars, VarFiles: opts.VarFiles, Rollout: ro, BundleName: bundleName(args[1])}
			if req.SiteRef, err = siteRef(siteDir); err != nil {
				return err
			}
			return runJob(cmd, &cf, func(ctx context.Context, cl *control.Client, on func(control.Event)) error {
				return cl.Apply(ctx, req, on)
			}, bf.json, bf.verbose)
		},
	}
	cf.register(c)
	bf.register(c)
	c.Flags().BoolVar(&dryRun, "dry-run", false, "plan only: report what would change, change nothing")
	c.Flags().DurationVar(&timeout, "timeout", 0, "how long to wait for returns (default: the master's job_timeout)")
	c.Flags().StringVar(&ro.Batch, "batch", "", "apply to N minions (or N% of the target) at a time, batch after batch")
	c.Flags().StringVar(&ro.Canary, "canary", "", "a target applied first, alone; if any of it fails nothing else is touched")
	c.Flags().IntVar(&ro.MaxFailures, "max-failures", 0, "stop the rollout once more than this many minions failed or did not return")
	c.Flags().StringVar(&siteDir, "site", "", "a states tree whose site.hcl groups the target may name (default: site in master.hcl)")
	return c
}

func newPingCmd() *cobra.Command {
	var (
		cf      controlFlags
		asJSON  bool
		timeout time.Duration
		siteDir string
	)
	c := &cobra.Command{
		Use:     "ping TARGET",
		Short:   "Check that the minions a target names answer the master",
		Example: "  brine ping '*'\n  brine ping group:app --timeout 5s",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if timeout == 0 {
				timeout = 10 * time.Second
			}
			req := control.PingRequest{Target: args[0], Timeout: timeout}
			var err error
			if req.SiteRef, err = siteRef(siteDir); err != nil {
				return err
			}
			return runJob(cmd, &cf, func(ctx context.Context, cl *control.Client, on func(control.Event)) error {
				return cl.Ping(ctx, req, on)
			}, asJSON, false)
		},
	}
	cf.register(c)
	c.Flags().StringVar(&siteDir, "site", "", "a states tree whose site.hcl groups the target may name (default: site in master.hcl)")
	c.Flags().BoolVar(&asJSON, "json", false, "print events as JSON lines")
	c.Flags().DurationVar(&timeout, "timeout", 0, "how long to wait for answers (default 10s)")
	return c
}

// jobCall sends one job op (ping, apply, run, converge) over cl, passing its events on.
type jobCall func(ctx context.Context, cl *control.Client, onEvent func(control.Event)) error

// runJob streams a job's events and maps the outcome to an exit code. A minion's last answer
// counts: a later phase (peers changed) replaces an earlier one.
func runJob(cmd *cobra.Command, cf *controlFlags, send jobCall, asJSON, verbose bool) error {
	cl, err := cf.client()
	if err != nil {
		return withCode(exitNothing, err)
	}
	ctx, cancel := signalContext()
	defer cancel()
	out, errOut := cmd.OutOrStdout(), cmd.ErrOrStderr()
	color := states.UseColor(os.Stdout)
	var (
		sent, invalid bool
		expected      = map[string]bool{}
		rets          = map[string]wire.Return{}
		missing       = map[string]bool{}
		untouched     []string
		batchStart    time.Time
		unknown       []string
		lateJIDs      []string // jobs some minion did not return in time
	)
	err = send(ctx, cl, func(ev control.Event) {
		if asJSON {
			_ = json.NewEncoder(out).Encode(ev)
		}
		switch ev.Event {
		case "published":
			sent = true
			for _, id := range ev.Minions {
				expected[id] = true
			}
			if !asJSON {
				phase := ""
				if ev.Phase > 1 {
					phase = fmt.Sprintf(" (phase %d: peers changed)", ev.Phase)
				}
				fmt.Fprintf(errOut, "job %s sent to %d minion(s)%s\n", ev.JID, len(ev.Minions), phase)
			}
		case "return":
			rets[ev.Return.Minion] = *ev.Return
			delete(missing, ev.Return.Minion)
			if !asJSON {
				printReturn(out, *ev.Return, verbose, color)
			}
		case "unknown":
			unknown = append(unknown, ev.Minions...)
			if !asJSON {
				fmt.Fprintln(errOut, escapeLines(ev.Hint))
			}
		case "missing":
			lateJIDs = append(lateJIDs, ev.JID)
			for _, id := range ev.Missing {
				missing[id] = true
				delete(rets, id)
				if !asJSON {
					fmt.Fprintf(out, "%s: no return\n", id)
				}
			}
		case "left_out":
			for _, id := range ev.Minions {
				missing[id] = true
				if !asJSON {
					fmt.Fprintf(errOut, "%s: left out: %s\n", id, escapeLines(ev.Error))
				}
			}
		case "unassigned":
			if !asJSON {
				for _, id := range ev.Minions {
					fmt.Fprintf(errOut, "%s: no bundle assigned by the site; left alone\n", id)
				}
			}
		case "invalid":
			invalid = true
			if !asJSON {
				fmt.Fprint(errOut, ev.Diagnostics)
			}
		case "batch":
			batchStart = time.Now()
			if !asJSON {
				what := "batch"
				if ev.Canary {
					what = "canary"
				}
				fmt.Fprintf(errOut, "%s %d/%d: %s\n", what, ev.Batch, ev.Batches, strings.Join(ev.Minions, ", "))
			}
		case "batch_done":
			if !asJSON {
				fmt.Fprintf(errOut, "batch %d/%d done in %s: %d ok, %d failed\n", ev.Batch, ev.Batches,
					time.Since(batchStart).Round(time.Millisecond), len(ev.Minions)-len(ev.Failed), len(ev.Failed))
			}
		case "stopped":
			untouched = ev.Untouched
			if !asJSON {
				fmt.Fprintf(errOut, "rollout stopped after batch %d/%d: %s\n", ev.Batch, ev.Batches, ev.Error)
				if len(ev.Untouched) > 0 {
					fmt.Fprintf(errOut, "not touched: %s\n", strings.Join(ev.Untouched, ", "))
				}
			}
		}
	})
	if invalid {
		return withCode(exitNothing, errors.New("the bundle is invalid; nothing was sent"))
	}
	if err != nil && !sent {
		return withCode(exitNothing, err)
	}
	failed := 0
	for _, r := range rets {
		if !r.Success {
			failed++
		}
	}
	if !asJSON {
		summary := fmt.Sprintf("%d minion(s): %d succeeded, %d failed, %d no return", len(expected), len(rets)-failed, failed, len(missing))
		if len(untouched) > 0 {
			summary += fmt.Sprintf(", %d not touched", len(untouched))
		}
		if len(unknown) > 0 {
			summary += fmt.Sprintf(", %d unknown (%s)", len(unknown), strings.Join(unknown, ", "))
		}
		fmt.Fprintln(out, summary)
		for _, jid := range lateJIDs {
			fmt.Fprintf(errOut, "job %s: the minions that did not return in time may still be running it; their results will appear in: brine jobs show %s\n", jid, jid)
		}
	}
	if err != nil {
		return withCode(exitFailed, err)
	}
	if failed > 0 || len(missing) > 0 || len(rets) < len(expected) || len(untouched) > 0 || len(unknown) > 0 {
		return withCode(exitFailed, nil)
	}
	return nil
}

func printReturn(w io.Writer, r wire.Return, verbose, color bool) {
	if r.Kind == wire.JobRun {
		printRunReturn(w, r)
		return
	}
	if r.Kind == wire.JobPing {
		fmt.Fprintf(w, "%s: pong\n", r.Minion)
		return
	}
	if r.Error != "" {
		// One line per minion: a newline in a minion's error would forge another minion's
		// line ("web2: pong") on the operator's terminal.
		fmt.Fprintf(w, "%s: failed: %s\n", r.Minion, escapeOutput(r.Error))
		if r.Diagnostics != "" {
			fmt.Fprint(w, indent(r.Diagnostics))
		}
		return
	}
	var rep states.Report
	if err := json.Unmarshal(r.Report, &rep); err != nil {
		fmt.Fprintf(w, "%s: unreadable report\n", r.Minion)
		return
	}
	fmt.Fprintf(w, "%s:\n", r.Minion)
	var sb strings.Builder
	states.RenderReport(&sb, &rep, verbose, color)
	fmt.Fprint(w, indent(sb.String()))
}

func indent(s string) string {
	lines := strings.SplitAfter(s, "\n")
	var b strings.Builder
	for _, l := range lines {
		if l != "" {
			b.WriteString("  " + l)
		}
	}
	return b.String()
}

func newJobsCmd() *cobra.Command {
	jobs := &cobra.Command{
		Use:     "jobs",
		Short:   "Show the master's job history",
		Example: "  brine jobs list\n  brine jobs show 20260102150405123456-ab12cd",
	}
	var (
		cf     controlFlags
		asJSON bool
		limit  int
	)
	list := &cobra.Command{
		Use:     "list",
		Short:   "List recent jobs, newest first",
		Example: "  brine jobs list --limit 20",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := cf.client()
			if err != nil {
				return withCode(exitNothing, err)
			}
			r, err := cl.Jobs(cmd.Context(), control.JobsRequest{Limit: limit})
			if err != nil {
				return withCode(exitNothing, err)
			}
			if asJSON {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(r.Jobs)
			}
			printJobs(cmd.OutOrStdout(), r.Jobs)
			return nil
		},
	}
	cf.register(list)
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	list.Flags().IntVar(&limit, "limit", 50, "at most this many jobs")

	var (
		cf2     controlFlags
		asJSON2 bool
		verbose bool
	)
	show := &cobra.Command{
		Use:     "show JID",
		Short:   "Show a job and every minion's full result",
		Example: "  brine jobs show 20260102150405123456-ab12cd --json",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := cf2.client()
			if err != nil {
				return withCode(exitNothing, err)
			}
			d, err := cl.Job(cmd.Context(), control.JobRequest{JID: args[0]})
			if err != nil {
				return withCode(exitNothing, err)
			}
			if asJSON2 {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(d)
			}
			w := cmd.OutOrStdout()
			printJobHeader(w, d.Job)
			ids := make([]string, 0, len(d.Returns))
			for id := range d.Returns {
				ids = append(ids, id)
			}
			sort.Strings(ids)
			for _, id := range ids {
				printReturn(w, d.Returns[id], verbose, states.UseColor(os.Stdout))
			}
			for _, id := range d.Missing {
				fmt.Fprintf(w, "%s: no return\n", id)
			}
			return nil
		},
	}
	cf2.register(show)
	show.Flags().BoolVar(&asJSON2, "json", false, "print JSON")
	show.Flags().BoolVarP(&verbose, "verbose", "v", false, "also list resources that were already as wanted")
	jobs.AddCommand(list, show)
	return jobs
}

// remoteFacts prints the facts the master last received from the minions target names; `brine
// facts TARGET` calls it.
func remoteFacts(cmd *cobra.Command, cf *controlFlags, target string) error {
	cl, err := cf.client()
	if err != nil {
		return withCode(exitNothing, err)
	}
	r, err := cl.Facts(cmd.Context(), control.FactsRequest{Target: target})
	if err != nil {
		return withCode(exitNothing, err)
	}
	enc := json.NewEncoder(cmd.OutOrStdout())
	enc.SetIndent("", "  ")
	if r.Facts == nil {
		r.Facts = map[string]map[string]any{}
	}
	return enc.Encode(r.Facts)
}

func init() {
	rootCmd.AddCommand(newApplyCmd(), newPingCmd(), newJobsCmd())
}
