package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/brinecm/brine/control"
	"github.com/brinecm/brine/internal/daemoncli"
	"github.com/brinecm/brine/master"
	"github.com/brinecm/brine/states"
	"github.com/brinecm/brine/states/resources/builtin"
)

func newConvergeCmd() *cobra.Command {
	var (
		cf      controlFlags
		bf      bundleFlags
		siteDir string
		dryRun  bool
		timeout time.Duration
		ro      control.Rollout
	)
	c := &cobra.Command{
		Use:   "converge [TARGET]",
		Short: "Apply the site (highstate): each minion gets the bundles its site file assigns it",
		Long: `Converge reads a states tree (a site.hcl and its bundles, one directory each), checks it, and
hands it to the local master, which works out each targeted minion's groups (key groups and the
site's groups) and the union of the bundles assigned to it, and sends one signed job per distinct
set of bundles. The bundles of a set share one graph: the same resource declared in two of them
is an error, ufw blocks merge. Anything broken stops the converge before anything is sent.

The site is --site DIR, else the site setting of master.hcl. TARGET defaults to '*'.

Exit status: 0 when every minion succeeded, 2 when a resource failed or a minion did not return,
1 when nothing was sent.`,
		Example: `  brine converge --site /etc/brine/states
  brine converge 'group:app' --dry-run
  brine converge --batch 25% --canary web1 --max-failures 1`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			target := "*"
			if len(args) == 1 {
				target = args[0]
			}
			opts, err := bf.options()
			if err != nil {
				return withCode(exitNothing, err)
			}
			if siteDir == "" && cf.socket == "" {
				cfg, diags := master.LoadConfig(daemoncli.ConfigPath(cf.config, defaultMasterConfig), cf.dataDir)
				if diags.HasErrors() {
					return withCode(exitNothing, diags)
				}
				siteDir = cfg.Site
			}
			req := control.ConvergeRequest{Target: target, DryRun: dryRun, Timeout: timeout,
				Vars: opts.Vars, VarFiles: opts.VarFiles, Rollout: ro}
			if siteDir != "" {
				tree, err := readSite(siteDir, opts, bf.json)
				if err != nil {
					return err
				}
				req.SiteRef = control.SiteRef{Site: tree.Marshal(), Dir: tree.Root}
			}
			// Without a directory here the master converges its own configured site.
			return runJob(cmd, &cf, func(ctx context.Context, cl *control.Client, on func(control.Event)) error {
				return cl.Converge(ctx, req, on)
			}, bf.json, bf.verbose)
		},
	}
	cf.register(c)
	bf.register(c)
	c.Flags().StringVar(&siteDir, "site", "", "the states tree: a site.hcl and its bundles (default: site in master.hcl)")
	c.Flags().BoolVar(&dryRun, "dry-run", false, "plan only: report what would change, change nothing")
	c.Flags().DurationVar(&timeout, "timeout", 0, "how long to wait for returns (default: the master's job_timeout)")
	c.Flags().StringVar(&ro.Batch, "batch", "", "converge N minions (or N% of the target) at a time, batch after batch")
	c.Flags().StringVar(&ro.Canary, "canary", "", "a target converged first, alone; if any of it fails nothing else is touched")
	c.Flags().IntVar(&ro.MaxFailures, "max-failures", 0, "stop the rollout once more than this many minions failed or did not return")
	return c
}

// readSite reads and checks a states tree: its site file and the syntax of every bundle. The
// rest (references across bundles, duplicates, variables) holds only for the bundles a minion
// gets together: the master checks each such set before it sends anything.
func readSite(dir string, opts states.Options, asJSON bool) (*states.Bundle, error) {
	tree, err := states.ReadBundle(dir)
	if err != nil {
		return nil, withCode(exitNothing, fmt.Errorf("site: %w", err))
	}
	tree.Root = filepath.Clean(dir)
	if _, diags := master.LoadSite(tree, true); diags.HasErrors() {
		printDiagnostics(asJSON, tree, diags)
		return nil, withCode(exitNothing, fmt.Errorf("%s: nothing was sent", states.SiteFileName(tree)))
	}
	declared := map[string]bool{}
	for _, name := range states.SiteBundles(tree) {
		b, err := states.MergeBundles(tree, []string{name})
		if err != nil {
			return nil, withCode(exitNothing, err)
		}
		mod, diags := states.Load(b, builtin.Types())
		if diags.HasErrors() {
			printDiagnostics(asJSON, b, diags)
			return nil, withCode(exitNothing, fmt.Errorf("bundle %s: nothing was sent", name))
		}
		for _, v := range mod.Variables {
			declared[v] = true
		}
	}
	for v := range opts.Vars {
		if !declared[v] {
			return nil, withCode(exitNothing, fmt.Errorf("--var %s: no bundle of the site declares variable %q", v, v))
		}
	}
	return tree, nil
}

// siteRef is the site.hcl of dir, whose groups a target may name; none when dir is "".
func siteRef(dir string) (control.SiteRef, error) {
	if dir == "" {
		return control.SiteRef{}, nil
	}
	site, err := siteFileOnly(dir)
	if err != nil {
		return control.SiteRef{}, err
	}
	return control.SiteRef{Site: site, Dir: dir}, nil
}

// siteFileOnly reads the site file of dir as a tree of one file, for the groups of ping, apply
// and run.
func siteFileOnly(dir string) ([]byte, error) {
	src, err := os.ReadFile(filepath.Join(dir, states.SiteFile))
	if err != nil {
		return nil, withCode(exitNothing, fmt.Errorf("--site: %w", err))
	}
	tree := &states.Bundle{Files: map[string][]byte{states.SiteFile: src}, Root: filepath.Clean(dir)}
	if _, diags := master.LoadSite(tree, false); diags.HasErrors() {
		printDiagnostics(false, tree, diags)
		return nil, withCode(exitNothing, fmt.Errorf("%s: nothing was sent", states.SiteFileName(tree)))
	}
	return tree.Marshal(), nil
}

func init() { rootCmd.AddCommand(newConvergeCmd()) }
