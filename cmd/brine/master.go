package main

import (
	"os"
	"path"

	"github.com/spf13/cobra"

	"github.com/brinecm/brine/internal/daemoncli"
	"github.com/brinecm/brine/master"
)

// pathMatch is path.Match for key globs.
func pathMatch(glob, s string) (bool, error) { return path.Match(glob, s) }

func newMasterCmd() *cobra.Command {
	var cfgPath, dataDir string
	var lf daemoncli.LogFlags
	c := &cobra.Command{
		Use:   "master",
		Short: "Run the master: key store, job publisher, return collector",
		Long: `Run a master. It reads /etc/brine/master.hcl when -c is not given and that file exists; with no
config file it uses built-in defaults: data under /var/lib/brine/master,
PUB on 0.0.0.0:4505, ROUTER on 0.0.0.0:4506, and the control socket <data-dir>/master.sock.
See docs/master.md for every setting.`,
		Example: "  brine master\n  brine master -c /etc/brine/master.hcl\n  brine master --data-dir ./state",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, diags := master.LoadConfig(daemoncli.ConfigPath(cfgPath, defaultMasterConfig), dataDir)
			if diags.HasErrors() {
				return withCode(exitNothing, diags)
			}
			logger, err := lf.Logger(os.Stderr)
			if err != nil {
				return withCode(exitNothing, err)
			}
			m, err := master.New(cfg, logger)
			if err != nil {
				return withCode(exitNothing, err)
			}
			ctx, cancel := signalContext()
			defer cancel()
			if err := m.Start(ctx); err != nil {
				m.Close()
				return withCode(exitNothing, err)
			}
			<-ctx.Done()
			logger.Info("master stopping")
			return m.Close()
		},
	}
	c.Flags().StringVarP(&cfgPath, "config", "c", "", "master config file (HCL; default "+defaultMasterConfig+" when it exists)")
	c.Flags().StringVar(&dataDir, "data-dir", "", "data dir (default "+master.DefaultDataDir+")")
	lf.Register(c.Flags())
	return c
}

func init() {
	rootCmd.AddCommand(newMasterCmd())
}
