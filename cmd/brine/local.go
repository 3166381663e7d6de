package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/spf13/cobra"

	"github.com/brinecm/brine/internal/termtext"
	"github.com/brinecm/brine/master"
	"github.com/brinecm/brine/states"
	"github.com/brinecm/brine/states/bounded"
	"github.com/brinecm/brine/states/resources/builtin"
)

// bundleFlags are the flags every command that loads a bundle shares.
type bundleFlags struct {
	vars     []string
	varFiles []string
	json     bool
	verbose  bool
}

func (f *bundleFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringArrayVar(&f.vars, "var", nil, "set a bundle variable: --var name=value (repeatable)")
	cmd.Flags().StringArrayVar(&f.varFiles, "var-file", nil, "read variables from an HCL file (repeatable)")
	cmd.Flags().BoolVar(&f.json, "json", false, "print the result as JSON")
	cmd.Flags().BoolVarP(&f.verbose, "verbose", "v", false, "also list resources that are already as wanted")
}

// options turns the flags into states.Options; errors are usage errors.
func (f *bundleFlags) options() (states.Options, error) {
	opts := states.Options{Vars: map[string]string{}, VarFiles: map[string][]byte{}}
	for _, kv := range f.vars {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return opts, fmt.Errorf("--var %q: write it as name=value", kv)
		}
		opts.Vars[k] = v
	}
	for _, p := range f.varFiles {
		data, err := os.ReadFile(p)
		if err != nil {
			return opts, fmt.Errorf("--var-file: %w", err)
		}
		opts.VarFiles[p] = data
	}
	return opts, nil
}

// printDiagnostics writes diagnostics for people (with source lines) or as JSON.
func printDiagnostics(asJSON bool, b *states.Bundle, diags hcl.Diagnostics) {
	if len(diags) == 0 {
		return
	}
	if asJSON {
		_ = json.NewEncoder(termtext.NewWriter(os.Stdout, false)).Encode(map[string]any{"diagnostics": diagnosticsJSON(diags)})
		return
	}
	states.WriteDiagnostics(stderr, b, diags, states.UseColor(os.Stderr))
}

type diagJSON struct {
	Severity string `json:"severity"`
	Summary  string `json:"summary"`
	Detail   string `json:"detail,omitempty"`
	File     string `json:"file,omitempty"`
	Line     int    `json:"line,omitempty"`
	Column   int    `json:"column,omitempty"`
}

func diagnosticsJSON(diags hcl.Diagnostics) []diagJSON {
	out := make([]diagJSON, 0, len(diags))
	for _, d := range diags {
		j := diagJSON{Severity: "error", Summary: d.Summary, Detail: d.Detail}
		if d.Severity == hcl.DiagWarning {
			j.Severity = "warning"
		}
		if d.Subject != nil {
			j.File, j.Line, j.Column = d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column
		}
		out = append(out, j)
	}
	return out
}

func newLocalCmd() *cobra.Command {
	local := &cobra.Command{
		Use:   "local",
		Short: "Plan or apply a bundle on this host, without a master",
		Example: `  brine local plan ./examples/hello
  brine local apply ./examples/hello --var motd="hello"`,
	}
	var id string
	var groups, facts, secretsFiles []string
	for _, dry := range []bool{true, false} {
		f := &bundleFlags{}
		dryRun := dry
		c := &cobra.Command{
			Use:   "apply DIR",
			Short: "Apply a bundle on this host: make every resource as the bundle says",
			Example: `  brine local apply ./examples/hello
  brine local apply ./site --var env=prod --var-file prod.hcl --json`,
			Args: cobra.ExactArgs(1),
		}
		if dryRun {
			c.Use = "plan DIR"
			c.Short = "Show what applying a bundle on this host would change, changing nothing"
			c.Example = `  brine local plan ./examples/hello
  brine local plan ./site -v`
		}
		c.RunE = func(cmd *cobra.Command, args []string) error {
			opts, err := f.options()
			if err != nil {
				return withCode(exitNothing, err)
			}
			host, _ := os.Hostname()
			if id == "" {
				id = host
			}
			extra := map[string]any{}
			for _, kv := range facts {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					return withCode(exitNothing, fmt.Errorf("--fact %q: write it as key=value", kv))
				}
				extra[k] = v
			}
			opts.Minion = states.Minion{ID: id, Groups: groups, Facts: states.Facts(builtin.Types(), extra)}
			if opts.Secrets, err = loadLocalSecrets(secretsFiles); err != nil {
				return withCode(exitNothing, err)
			}
			return localRun(cmd, args[0], opts, f, dryRun)
		}
		f.register(c)
		c.Flags().StringArrayVar(&secretsFiles, "secrets-file", nil, "read secret(\"NAME\") values from a file in the master's secrets file format (repeatable)")
		local.AddCommand(c)
	}
	local.AddCommand(newLocalCaptureCmd())
	local.PersistentFlags().StringVar(&id, "id", "", "minion id the bundle sees as minion.id (default: the host name)")
	local.PersistentFlags().StringArrayVar(&groups, "group", nil, "a group the bundle sees in minion.groups (repeatable)")
	local.PersistentFlags().StringArrayVar(&facts, "fact", nil, "an extra fact key=value in minion.facts (repeatable)")
	return local
}

// loadLocalSecrets reads secrets files in the master's format (secret "NAME" { value = "..." }).
// There is one host, so every secret is available to it: a target is not evaluated.
func loadLocalSecrets(paths []string) (map[string]string, error) {
	out := map[string]string{}
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("--secrets-file: %w", err)
		}
		list, err := master.LoadSecrets(p)
		if err != nil {
			return nil, fmt.Errorf("--secrets-file %s: %w", p, err)
		}
		for _, s := range list {
			out[s.Name] = s.Value
		}
	}
	return out, nil
}

func localRun(cmd *cobra.Command, dir string, opts states.Options, f *bundleFlags, dryRun bool) error {
	b, err := states.ReadBundle(dir)
	if err != nil {
		return withCode(exitNothing, err)
	}
	b.Root = filepath.Clean(dir)
	ctx, stop := signalContext()
	defer stop()
	var g *states.Graph
	mod, diags := states.Load(b, builtin.Types())
	if !diags.HasErrors() {
		// Bounded like every compile (states/bounded): a bundle's expressions could take the host.
		g, diags = bounded.CompileChecked(ctx, mod, opts, bounded.Limits{})
	}
	printDiagnostics(f.json, b, diags)
	if diags.HasErrors() {
		return withCode(exitNothing, fmt.Errorf("%s: nothing was applied", dir))
	}
	rep := states.Run(ctx, g, dryRun)
	if f.json {
		enc := json.NewEncoder(cmd.OutOrStdout())
		if err := enc.Encode(rep); err != nil {
			return withCode(exitNothing, err)
		}
	} else {
		states.RenderReport(cmd.OutOrStdout(), rep, f.verbose, states.UseColor(os.Stdout))
	}
	if rep.Failed() {
		return withCode(exitFailed, nil)
	}
	return nil
}

func newFactsCmd() *cobra.Command {
	var extra []string
	var cf controlFlags
	c := &cobra.Command{
		Use:   "facts [TARGET]",
		Short: "Print this host's facts as JSON, or the facts of minions from the master",
		Example: `  brine facts                 # this host
  brine facts 'group:app'     # minions, as the master last saw them`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				return remoteFacts(cmd, &cf, args[0])
			}
			m := map[string]any{}
			for _, kv := range extra {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					return withCode(exitNothing, fmt.Errorf("--fact %q: write it as key=value", kv))
				}
				m[k] = v
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(states.Facts(builtin.Types(), m))
		},
	}
	c.Flags().StringArrayVar(&extra, "fact", nil, "an extra fact key=value (repeatable)")
	cf.register(c)
	return c
}

func init() {
	rootCmd.AddCommand(newLocalCmd(), newFactsCmd())
}
