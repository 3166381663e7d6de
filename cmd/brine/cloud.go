package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/digitalocean/godo"
	"github.com/hashicorp/hcl/v2"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/brinecm/brine/cloud"
	"github.com/brinecm/brine/cloud/dosim"
	"github.com/brinecm/brine/cloud/dosim/testbedboot"
	"github.com/brinecm/brine/control"
	"github.com/brinecm/brine/internal/termtext"
	"github.com/brinecm/brine/master"
	"github.com/brinecm/brine/pki"
	"github.com/brinecm/brine/states"
	"github.com/brinecm/brine/testbed"
)

// cloudFlags are shared by every `brine cloud` command.
type cloudFlags struct {
	config        string
	apiURL        string
	json          bool
	dryRun        bool
	verbose       bool
	poll          time.Duration
	deleteTimeout time.Duration
}

var cf cloudFlags

// cloudControl locates the master that create and sync talk to (enrolment tokens, the
// bootstrap endpoint, enrolment waits, converging), as for `brine apply`.
var cloudControl controlFlags

// registerCloudControl adds the control-socket flags of `brine apply` to cmd. The master's
// config is --master-config here, because -c/--config is cloud.hcl for every cloud command.
func registerCloudControl(cmd *cobra.Command) {
	cmd.Flags().StringVar(&cloudControl.socket, "socket", os.Getenv("BRINE_SOCKET"), "the master's control socket (default <data-dir>/master.sock; env BRINE_SOCKET)")
	cmd.Flags().StringVar(&cloudControl.config, "master-config", "", "the master's config file, to find its control socket")
	cmd.Flags().StringVar(&cloudControl.dataDir, "data-dir", "", "the master's data dir (default "+master.DefaultDataDir+")")
}

// cloudMaster is the master provisioning talks to, over its control socket; bundles named by
// profiles are read from cfg's bundle_dir and sent with each converge.
func cloudMaster(cfg *cloud.Config) (cloud.Master, error) {
	cl, err := cloudControl.client()
	if err != nil {
		return nil, err
	}
	return &cloud.ControlMaster{Client: cl, BundleDir: cfg.BundleDir}, nil
}

var cloudCmd = &cobra.Command{
	Use:   "cloud",
	Short: "Provision DigitalOcean droplets that bootstrap into converged minions",
	Long: `Provision DigitalOcean droplets from the profiles and maps of cloud.hcl. New droplets download
brine from the master, enrol with a single-use token and converge with their profile's bundles.
The API token comes from DIGITALOCEAN_TOKEN or the provider's token_file; it is never printed.`,
	Example: `  brine cloud create app web-1 web-2        # two droplets of profile "app"
  brine cloud sync production --dry-run      # what would sync change?
  brine cloud list --json`,
}

func init() {
	pf := cloudCmd.PersistentFlags()
	pf.StringVarP(&cf.config, "config", "c", "", "cloud configuration (default ./cloud.hcl, else /etc/brine/cloud.hcl)")
	pf.StringVar(&cf.apiURL, "api-url", "", "DigitalOcean API URL (for the simulator: see `brine cloud sim`)")
	pf.BoolVar(&cf.json, "json", false, "print JSON (events and results, one object a line)")
	pf.BoolVar(&cf.dryRun, "dry-run", false, "plan only: read the account, change nothing")
	pf.BoolVarP(&cf.verbose, "verbose", "v", false, "log API retries and progress to stderr")
	pf.DurationVar(&cf.poll, "poll-interval", 3*time.Second, "how often droplet status is polled while waiting for \"active\" (one request per poll)")
	pf.DurationVar(&cf.deleteTimeout, "delete-timeout", cloud.DefaultDeleteTimeout, "how long a deleted droplet may take to be gone (DigitalOcean deletes asynchronously)")
	cloudCmd.AddCommand(newCloudCreateCmd(), newCloudListCmd(), newCloudDestroyCmd(), newCloudSyncCmd(),
		newCloudDNSCmd(), newCloudSimCmd())
	rootCmd.AddCommand(cloudCmd)
}

// loadCloudConfig reads the configuration; required says whether a missing file is an error
// (create and sync need profiles; list, destroy and dns only the provider).
func loadCloudConfig(required bool) (*cloud.Config, error) {
	path := cf.config
	if path == "" {
		for _, p := range []string{"cloud.hcl", "/etc/brine/cloud.hcl"} {
			if _, err := os.Stat(p); err == nil {
				path = p
				break
			}
		}
	}
	if path == "" {
		if required {
			return nil, errors.New("no cloud configuration: pass --config FILE or create ./cloud.hcl (see docs/cloud.md)")
		}
		return &cloud.Config{Profiles: map[string]*cloud.Profile{}, Maps: map[string]*cloud.Map{}}, nil
	}
	cfg, diags := cloud.LoadConfig(path)
	if len(diags) > 0 {
		writeCloudDiagnostics(cfg, diags)
	}
	if diags.HasErrors() {
		return nil, fmt.Errorf("%s has errors: nothing was done", path)
	}
	return cfg, nil
}

func writeCloudDiagnostics(cfg *cloud.Config, diags hcl.Diagnostics) {
	if cf.json {
		type dj struct {
			Severity string `json:"severity"`
			Summary  string `json:"summary"`
			Detail   string `json:"detail,omitempty"`
			File     string `json:"file,omitempty"`
			Line     int    `json:"line,omitempty"`
			Column   int    `json:"column,omitempty"`
		}
		var out []dj
		for _, d := range diags {
			j := dj{Severity: "error", Summary: d.Summary, Detail: d.Detail}
			if d.Severity == hcl.DiagWarning {
				j.Severity = "warning"
			}
			if d.Subject != nil {
				j.File, j.Line, j.Column = d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column
			}
			out = append(out, j)
		}
		_ = json.NewEncoder(termtext.NewWriter(os.Stdout, false)).Encode(map[string]any{"diagnostics": out})
		return
	}
	var files map[string]*hcl.File
	if cfg != nil {
		files = cfg.Files
	}
	width, _, err := term.GetSize(int(os.Stderr.Fd()))
	if err != nil || width <= 0 {
		width = 100
	}
	color := states.UseColor(os.Stderr)
	w := hcl.NewDiagnosticTextWriter(termtext.NewWriter(os.Stderr, color), files, uint(width), color)
	_ = w.WriteDiagnostics(diags)
}

// cloudClient builds the API client from the flags, the configuration and the environment.
// cloudSetup loads cloud.hcl (required: it must exist) and makes the API client of every
// command that talks to DigitalOcean.
func cloudSetup(required bool) (*cloud.Config, *cloud.Client, error) {
	cfg, err := loadCloudConfig(required)
	if err != nil {
		return nil, nil, err
	}
	c, err := cloudClient(cfg)
	return cfg, c, err
}

func cloudClient(cfg *cloud.Config) (*cloud.Client, error) {
	tok, err := cloud.LoadToken(cfg.Provider.TokenFile)
	if err != nil {
		return nil, err
	}
	url := cf.apiURL
	if url == "" {
		url = cfg.Provider.APIURL
	}
	level := slog.LevelWarn
	if cf.verbose {
		level = slog.LevelInfo
	}
	return cloud.NewClient(cloud.ClientOptions{Token: tok, APIURL: url, RequestsPerMinute: cfg.Provider.RequestsPerMinute,
		PollInterval: cf.poll, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))})
}

func printJSON(w io.Writer, v any) error { return json.NewEncoder(w).Encode(v) }

// progress renders droplet events: JSON lines, a live table on a terminal, or one line per
// event otherwise.
type progress struct {
	w     io.Writer
	json  bool
	live  bool
	color bool
	mu    sync.Mutex // guards the fields below
	order []string
	last  map[string]cloud.Event
	drawn int
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w, json: cf.json, last: map[string]cloud.Event{}}
	raw := w
	if tw, ok := w.(*termtext.Writer); ok {
		raw = tw.Unwrap()
	}
	if f, ok := raw.(*os.File); ok && !cf.json {
		p.live = term.IsTerminal(int(f.Fd()))
		p.color = states.UseColor(f)
		if p.live {
			p.w = f // the live display moves the cursor itself; line() escapes its text
		}
	}
	return p
}

func (p *progress) event(e cloud.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.json {
		_ = printJSON(p.w, map[string]any{"event": e})
		return
	}
	if _, ok := p.last[e.Droplet]; !ok {
		p.order = append(p.order, e.Droplet)
	}
	p.last[e.Droplet] = e
	if !p.live {
		fmt.Fprintln(p.w, p.line(e))
		return
	}
	if p.drawn > 0 {
		fmt.Fprintf(p.w, "\x1b[%dA", p.drawn)
	}
	for _, n := range p.order {
		fmt.Fprintf(p.w, "\x1b[2K%s\n", p.line(p.last[n]))
	}
	p.drawn = len(p.order)
}

func (p *progress) line(e cloud.Event) string {
	stage := fmt.Sprintf("%-9s", e.Stage)
	if p.color {
		switch e.Stage {
		case cloud.StageConverged:
			stage = "\x1b[32m" + stage + "\x1b[0m"
		case cloud.StageFailed:
			stage = "\x1b[31m" + stage + "\x1b[0m"
		}
	}
	s := fmt.Sprintf("%-24s %s %6.1fs", escapeOutput(e.Droplet), stage, e.Elapsed.Seconds())
	if e.PublicIP != "" {
		s += "  " + escapeOutput(e.PublicIP)
	}
	if e.Error != "" {
		s += "  " + escapeOutput(e.Error)
	}
	return s
}

// createExit maps a create's outcome to an exit code: nothing created is 1, a partial result 2.
func createExit(res *cloud.CreateResult, err error) error {
	if err == nil {
		return nil
	}
	if res != nil {
		if created, _ := res.Counts(); created > 0 {
			return withCode(exitFailed, err)
		}
	}
	return withCode(exitNothing, err)
}

func printExisting(w io.Writer, ds []cloud.Droplet) {
	if len(ds) == 0 || cf.json {
		return
	}
	fmt.Fprintln(w, "droplets that exist now:")
	printDroplets(w, ds)
}

func newCloudCreateCmd() *cobra.Command {
	var parallel int
	var activeTimeout, convergeTimeout time.Duration
	cmd := &cobra.Command{
		Use:   "create PROFILE NAME...",
		Short: "Create droplets of a profile and wait until each is a converged minion",
		Example: `  brine cloud create app web-1 web-2 web-3
  brine cloud create db db-main --dry-run
  brine cloud create app web-4 --json | jq .event.stage`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadCloudConfig(true)
			if err != nil {
				return withCode(exitNothing, err)
			}
			prof, err := cfg.Profile(args[0])
			if err != nil {
				return withCode(exitNothing, err)
			}
			c, err := cloudClient(cfg)
			if err != nil {
				return withCode(exitNothing, err)
			}
			var mst cloud.Master
			if !cf.dryRun {
				if err := cfg.CheckBundles(prof); err != nil {
					return withCode(exitNothing, err)
				}
				if mst, err = cloudMaster(cfg); err != nil {
					return withCode(exitNothing, err)
				}
			}
			ctx, stop := signalContext()
			defer stop()
			out := cmd.OutOrStdout()
			p := newProgress(out)
			res, err := c.Create(ctx, cloud.CreateRequest{Profile: prof, Names: args[1:], Master: mst,
				DryRun: cf.dryRun, OnEvent: p.event, Parallel: parallel, ActiveTimeout: activeTimeout,
				ConvergeTimeout: convergeTimeout, DeleteWait: cf.deleteTimeout})
			if cf.json {
				if res != nil {
					_ = printJSON(out, map[string]any{"result": res})
				}
			} else if res != nil {
				if res.DryRun && err == nil {
					fmt.Fprintf(out, "dry run: would create %d droplet(s) of profile %s (%s, %s, %s); nothing was created\n",
						len(res.Droplets), prof.Name, prof.Region, prof.Size, prof.Image)
				} else if err == nil {
					fmt.Fprintf(out, "%d droplet(s) converged\n", len(res.Droplets))
				}
				printExisting(out, res.Existing)
			}
			return createExit(res, err)
		},
	}
	cmd.Flags().IntVar(&parallel, "parallel", 10, "droplets created at once")
	cmd.Flags().DurationVar(&activeTimeout, "active-timeout", 10*time.Minute, "how long a droplet may stay \"new\"")
	cmd.Flags().DurationVar(&convergeTimeout, "converge-timeout", 15*time.Minute, "how long an active droplet may take to enrol and converge")
	registerCloudControl(cmd)
	return cmd
}

func printDroplets(w io.Writer, ds []cloud.Droplet) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tID\tSTATUS\tPUBLIC IP\tPRIVATE IP\tREGION\tSIZE\tPROFILE")
	for _, d := range ds {
		prof := d.Profile
		if !d.Managed {
			prof = "(not brine)"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", d.Name, d.ID, d.Status, dash(d.PublicIP), dash(d.PrivateIP), d.Region, d.Size, dash(prof))
	}
	_ = tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newCloudListCmd() *cobra.Command {
	var all bool
	var tag string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the droplets brine made (or all with --all)",
		Example: `  brine cloud list
  brine cloud list --all --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, c, err := cloudSetup(false)
			if err != nil {
				return withCode(exitNothing, err)
			}
			ctx, stop := signalContext()
			defer stop()
			ds, err := c.List(ctx, cloud.ListOptions{All: all, Tag: tag})
			if err != nil {
				return withCode(exitNothing, err)
			}
			if cf.json {
				return printJSON(cmd.OutOrStdout(), map[string]any{"droplets": ds})
			}
			if len(ds) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "no droplets")
				return nil
			}
			printDroplets(cmd.OutOrStdout(), ds)
			return nil
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "list every droplet of the account, not only brine's")
	cmd.Flags().StringVar(&tag, "tag", "", "list droplets with this tag")
	return cmd
}

// confirm asks on the terminal; without one it refuses, so scripts must say --yes.
func confirm(in io.Reader, out io.Writer, prompt string) (bool, error) {
	f, ok := in.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return false, errors.New("not a terminal: pass --yes to confirm")
	}
	fmt.Fprintf(out, "%s Type yes to continue: ", prompt)
	line, err := bufio.NewReader(in).ReadString('\n')
	if err != nil && line == "" {
		return false, err
	}
	return strings.TrimSpace(line) == "yes", nil
}

func newCloudDestroyCmd() *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:   "destroy NAME...",
		Short: "Destroy droplets brine made (refuses droplets without the brine tag) and delete their minion keys",
		Long: `Destroy droplets brine made, then delete their minion keys on the master (over its control
socket, as brine key delete does), so that a droplet made later with the same name enrols afresh
and the old key is no longer trusted. A key that could not be deleted is reported, and the exit
status is 2.`,
		Example: `  brine cloud destroy web-4 web-5
  brine cloud destroy web-4 --yes     # no confirmation prompt
  brine cloud destroy web-4 --dry-run`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, c, err := cloudSetup(false)
			if err != nil {
				return withCode(exitNothing, err)
			}
			ctx, stop := signalContext()
			defer stop()
			out := cmd.OutOrStdout()
			plan, err := c.Destroy(ctx, cloud.DestroyRequest{Names: args, DryRun: true})
			if err != nil {
				return withCode(exitNothing, err)
			}
			if cf.dryRun || !yes {
				if cf.json && cf.dryRun {
					return printJSON(out, map[string]any{"result": plan})
				}
				if !cf.json {
					fmt.Fprintln(out, "would destroy:")
					printDroplets(out, plan.Destroyed)
				}
				if cf.dryRun {
					return nil
				}
				ok, err := confirm(os.Stdin, os.Stderr, fmt.Sprintf("Destroy %d droplet(s)?", len(plan.Destroyed)))
				if err != nil {
					return withCode(exitNothing, fmt.Errorf("nothing destroyed: %w", err))
				}
				if !ok {
					return withCode(exitNothing, errors.New("nothing destroyed"))
				}
			}
			res, err := c.Destroy(ctx, cloud.DestroyRequest{Names: args, Timeout: cf.deleteTimeout})
			var forgotten []string
			var ferr error
			if res != nil && len(res.Destroyed) > 0 {
				forgotten, ferr = forgetMinions(ctx, res.Destroyed)
			}
			if cf.json {
				_ = printJSON(out, map[string]any{"result": res, "keys_deleted": forgotten})
			} else if res != nil {
				for _, d := range res.Destroyed {
					fmt.Fprintf(out, "destroyed %s (id %d)\n", d.Name, d.ID)
				}
				for _, id := range forgotten {
					fmt.Fprintf(out, "deleted the minion key of %s\n", id)
				}
			}
			if err == nil && ferr != nil {
				return withCode(exitFailed, ferr)
			}
			if err != nil {
				if res != nil && len(res.Destroyed) > 0 {
					return withCode(exitFailed, err)
				}
				return withCode(exitNothing, err)
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	registerCloudControl(cmd)
	return cmd
}

// forgetMinions deletes the minion keys of destroyed droplets on the master (a droplet's name
// is its minion id) and returns the ids whose keys it deleted. A name that is not a minion id
// has no key; an error names the keys left for the operator to delete.
func forgetMinions(ctx context.Context, destroyed []cloud.Droplet) ([]string, error) {
	var ids []string
	for _, d := range destroyed {
		if pki.ValidID(d.Name) { // no glob characters: the delete matches this id only
			ids = append(ids, d.Name)
		}
	}
	if len(ids) == 0 {
		return nil, nil
	}
	cl, err := cloudControl.client()
	var deleted []string
	for i, id := range ids {
		if err == nil {
			var r control.KeyIDs
			if r, err = cl.KeyDelete(ctx, control.KeyRequest{Glob: id}); err == nil {
				deleted = append(deleted, r.IDs...)
				continue
			}
		}
		return deleted, fmt.Errorf("the droplets were destroyed, but the minion keys of %s were not deleted (%w): run brine key delete NAME on the master",
			strings.Join(ids[i:], " "), err)
	}
	return deleted, nil
}

func newCloudSyncCmd() *cobra.Command {
	var prune bool
	cmd := &cobra.Command{
		Use:   "sync MAP",
		Short: "Create the droplets a map names that are missing (and destroy extras with --prune)",
		Example: `  brine cloud sync production --dry-run
  brine cloud sync production
  brine cloud sync production --prune`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, c, err := cloudSetup(true)
			if err != nil {
				return withCode(exitNothing, err)
			}
			ctx, stop := signalContext()
			defer stop()
			out := cmd.OutOrStdout()
			p := newProgress(out)
			// Plan first, always, and show it before anything changes.
			plan, err := c.Sync(ctx, cloud.SyncRequest{Config: cfg, Map: args[0], Prune: prune, DryRun: true})
			if err != nil {
				return withCode(exitNothing, err)
			}
			if !cf.json {
				printSyncPlan(out, plan.Plan)
			}
			if cf.dryRun {
				if cf.json {
					return printJSON(out, map[string]any{"result": plan})
				}
				fmt.Fprintln(out, "dry run: nothing was changed")
				return nil
			}
			if len(plan.Plan.Create) == 0 && (!prune || len(plan.Plan.Extra) == 0) {
				if cf.json {
					return printJSON(out, map[string]any{"result": plan})
				}
				return nil
			}
			var profiles []*cloud.Profile
			for _, w := range plan.Plan.Create {
				profiles = append(profiles, cfg.Profiles[w.Profile])
			}
			if err := cfg.CheckBundles(profiles...); err != nil {
				return withCode(exitNothing, err)
			}
			mst, err := cloudMaster(cfg)
			if err != nil {
				return withCode(exitNothing, err)
			}
			res, err := c.Sync(ctx, cloud.SyncRequest{Config: cfg, Map: args[0], Prune: prune, Master: mst, OnEvent: p.event,
				Create: cloud.CreateRequest{DeleteWait: cf.deleteTimeout}})
			if res != nil && res.Destroyed != nil && len(res.Destroyed.Destroyed) > 0 {
				forgotten, ferr := forgetMinions(ctx, res.Destroyed.Destroyed)
				for _, id := range forgotten {
					fmt.Fprintf(cmd.ErrOrStderr(), "deleted the minion key of %s\n", id)
				}
				if err == nil && ferr != nil {
					err = ferr
				}
			}
			if cf.json {
				_ = printJSON(out, map[string]any{"result": res})
			} else if res != nil {
				for _, cr := range res.Created {
					if cr != nil {
						printExisting(out, cr.Existing)
					}
				}
			}
			if err != nil {
				made := false
				if res != nil {
					for _, cr := range res.Created {
						if n, _ := cr.Counts(); n > 0 {
							made = true
						}
					}
					if res.Destroyed != nil && len(res.Destroyed.Destroyed) > 0 {
						made = true
					}
				}
				if made {
					return withCode(exitFailed, err)
				}
				return withCode(exitNothing, err)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&prune, "prune", false, "destroy droplets of the map that it no longer names")
	registerCloudControl(cmd)
	return cmd
}

func printSyncPlan(w io.Writer, p cloud.SyncPlan) {
	fmt.Fprintf(w, "map %s: %d to create, %d in place, %d extra\n", p.Map, len(p.Create), len(p.Keep), len(p.Extra))
	for _, c := range p.Create {
		fmt.Fprintf(w, "  + %s (profile %s)\n", c.Name, c.Profile)
	}
	for _, d := range p.Dying {
		fmt.Fprintf(w, "  ~ %s (id %d) is being destroyed; made again once it is gone\n", d.Name, d.ID)
	}
	for _, d := range p.Extra {
		if p.Prune {
			fmt.Fprintf(w, "  - %s (id %d)\n", d.Name, d.ID)
		} else {
			fmt.Fprintf(w, "  ? %s (id %d) is no longer in the map; --prune destroys it\n", d.Name, d.ID)
		}
	}
}

func newCloudDNSCmd() *cobra.Command {
	dns := &cobra.Command{
		Use:   "dns",
		Short: "Set and list DNS records through DigitalOcean (the cut-over of a migration)",
		Example: `  brine cloud dns set example.com www A 203.0.113.10 --ttl 60
  brine cloud dns list example.com`,
	}
	var ttl int
	set := &cobra.Command{
		Use:   "set DOMAIN NAME TYPE VALUE",
		Short: "Make NAME TYPE in DOMAIN point at VALUE alone (creates, updates or leaves it)",
		Example: `  brine cloud dns set example.com www A 203.0.113.10 --ttl 60
  brine cloud dns set example.com @ AAAA 2001:db8::10 --dry-run`,
		Args: cobra.ExactArgs(4),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, c, err := cloudSetup(false)
			if err != nil {
				return withCode(exitNothing, err)
			}
			ctx, stop := signalContext()
			defer stop()
			ch, err := c.DNSSet(ctx, cloud.DNSSetRequest{Domain: args[0], Name: args[1], Type: args[2], Value: args[3], TTL: ttl, DryRun: cf.dryRun})
			if err != nil {
				return withCode(exitNothing, err)
			}
			out := cmd.OutOrStdout()
			if cf.json {
				return printJSON(out, map[string]any{"result": ch})
			}
			prefix := ""
			if ch.DryRun {
				prefix = "dry run: would "
			}
			r := ch.Record
			fq := args[0]
			if r.Name != "@" {
				fq = r.Name + "." + args[0]
			}
			switch ch.Action {
			case "unchanged":
				fmt.Fprintf(out, "%s %s is already %s (ttl %d)\n", fq, r.Type, r.Data, r.TTL)
			case "create":
				fmt.Fprintf(out, "%screate %s %s %s (ttl %d)\n", prefix, fq, r.Type, r.Data, r.TTL)
			default:
				fmt.Fprintf(out, "%supdate %s %s: %s -> %s (ttl %d)\n", prefix, fq, r.Type, ch.Previous.Data, r.Data, r.TTL)
				fmt.Fprintf(out, "rollback: brine cloud dns set %s %s %s %s --ttl %d\n", args[0], ch.Previous.Name, r.Type, ch.Previous.Data, ch.Previous.TTL)
			}
			for _, x := range ch.Removed {
				fmt.Fprintf(out, "%sremove the other %s record %s (id %d)\n", prefix, x.Type, x.Data, x.ID)
			}
			return nil
		},
	}
	set.Flags().IntVar(&ttl, "ttl", 0, "time to live in seconds (default 300 for a new record, unchanged otherwise)")
	list := &cobra.Command{
		Use:     "list DOMAIN",
		Short:   "List the DNS records of a domain",
		Example: `  brine cloud dns list example.com --json`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, c, err := cloudSetup(false)
			if err != nil {
				return withCode(exitNothing, err)
			}
			ctx, stop := signalContext()
			defer stop()
			recs, err := c.DNSList(ctx, args[0])
			if err != nil {
				return withCode(exitNothing, err)
			}
			out := cmd.OutOrStdout()
			if cf.json {
				return printJSON(out, map[string]any{"records": recs})
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tTYPE\tDATA\tTTL\tID")
			for _, r := range recs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\n", r.Name, r.Type, r.Data, r.TTL, r.ID)
			}
			return tw.Flush()
		},
	}
	dns.AddCommand(set, list)
	return dns
}

func newCloudSimCmd() *cobra.Command {
	var bootDelay, deleteDelay time.Duration
	var token, boot, cluster string
	var domains []string
	cmd := &cobra.Command{
		Use:   "sim",
		Short: "Run a DigitalOcean API simulator on 127.0.0.1 (for demos and trying brine cloud)",
		Long: `sim runs a DigitalOcean API simulator on 127.0.0.1 until Ctrl-C; its state lives in memory.

By default (--boot none) droplets become "active" and nothing more: list, destroy, dns and
create --dry-run work, but a droplet never runs its user_data, so create refuses to make any.
With --boot testbed (root) every droplet boots as a systemd testbed host on this machine, which
runs its user_data as cloud-init would: it downloads brine from the master, installs the
minion's unit, enrols and is converged, so create works end to end. The master must listen on
the testbed bridge address sim prints (bootstrap_addr and advertise_addr in master.hcl); the
hosts are removed when sim stops.`,
		Example: `  brine cloud sim --boot-delay 5s
  # then, in another shell, with the URL and token it prints:
  DIGITALOCEAN_TOKEN=... brine cloud list --api-url http://127.0.0.1:PORT/
  sudo brine cloud sim --boot testbed     # droplets boot as testbed hosts (docs/cloud.md)`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signalContext()
			defer stop()
			opts := dosim.Options{Token: token, BootDelay: bootDelay, DeleteDelay: deleteDelay,
				Logger: slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn}))}
			var tb *testbed.Cluster
			switch boot {
			case "none":
			case "testbed":
				if err := testbed.SystemdAvailable(); err != nil {
					return withCode(exitNothing, fmt.Errorf("--boot testbed: %w", err))
				}
				if cluster == "" {
					cluster = fmt.Sprintf("sim%d", os.Getpid()%100000)
				}
				var err error
				if tb, err = testbed.New(ctx, testbed.Options{Name: cluster, Systemd: true}); err != nil {
					return withCode(exitNothing, err)
				}
				defer tb.Close()
				opts.Booter = testbedboot.New(tb)
			default:
				return withCode(exitNothing, fmt.Errorf("--boot %q: want none or testbed", boot))
			}
			sim := dosim.New(opts)
			url, err := sim.Start()
			if err != nil {
				return withCode(exitNothing, err)
			}
			// Stop the simulator (and its boots) before the hosts go.
			defer sim.Close()
			out := cmd.OutOrStdout()
			// The simulator's own token: printing it is the point (it opens nothing real).
			if cf.json {
				j := map[string]any{"url": url, "token": sim.Token(), "boot": boot}
				if tb != nil {
					j["cluster"], j["bridge"] = tb.Name(), tb.BridgeAddr()
				}
				_ = printJSON(out, j)
			} else {
				fmt.Fprintf(out, "DigitalOcean API simulator listening on %s\n", url)
				fmt.Fprintf(out, "export DIGITALOCEAN_TOKEN=%s\n", sim.Token())
				fmt.Fprintf(out, "brine cloud list --api-url %s\n", url)
				if tb != nil {
					fmt.Fprintf(out, "droplets boot as systemd hosts of testbed cluster %s; they reach this machine at %s, so master.hcl needs:\n", tb.Name(), tb.BridgeAddr())
					fmt.Fprintf(out, "  bootstrap_addr = \"%s:4580\"\n", tb.BridgeAddr())
					fmt.Fprintf(out, "inspect a droplet with: brine testbed exec --name %s NAME -- journalctl -u brine-minion\n", tb.Name())
				} else {
					fmt.Fprintln(out, "droplets never boot (create refuses them): --boot testbed makes them real hosts")
				}
				fmt.Fprintln(out, "Ctrl-C stops it; its state lives in memory only.")
			}
			for _, d := range domains {
				if err := simAddDomain(url, sim.Token(), d); err != nil {
					return withCode(exitNothing, err)
				}
			}
			<-ctx.Done()
			return nil
		},
	}
	cmd.Flags().DurationVar(&bootDelay, "boot-delay", 2*time.Second, "how long droplets stay \"new\"")
	cmd.Flags().DurationVar(&deleteDelay, "delete-delay", dosim.DefaultDeleteDelay, "how long a deleted droplet is still listed, as on DigitalOcean (negative: gone at once)")
	cmd.Flags().StringVar(&token, "token", "", "token to accept (default: a random one)")
	cmd.Flags().StringSliceVar(&domains, "domain", nil, "create these DNS domains at start (repeatable)")
	cmd.Flags().StringVar(&boot, "boot", "none", "what droplets boot as: none, or testbed (systemd testbed hosts running their user_data; root)")
	cmd.Flags().StringVar(&cluster, "cluster", "", "with --boot testbed: the testbed cluster's name (default sim<pid>)")
	return cmd
}

// simAddDomain creates a domain in the simulator through the API, as a user would.
func simAddDomain(url, token, name string) error {
	c, err := cloud.NewClient(cloud.ClientOptions{Token: cloud.NewToken(token), APIURL: url, RequestsPerMinute: -1})
	if err != nil {
		return err
	}
	_, _, err = c.Godo().Domains.Create(context.Background(), &godo.DomainCreateRequest{Name: name})
	return err
}
