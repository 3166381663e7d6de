package main

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/brinecm/brine/minion"
)

func newMinionCmd() *cobra.Command {
	var cfgPath, masterAddr, id, dataDir string
	var lf logFlags
	c := &cobra.Command{
		Use:   "minion",
		Short: "Run a minion: connect to the master, apply the jobs it sends",
		Long: `Run a minion. It connects out to the master (ports 4505 and 4506), proves its identity, and
waits for the operator to accept its key (brine key accept ID on the master) unless minion.hcl has
an enrolment token. It pins the master's key: master_finger, else the fingerprint a brn2 token
carries, else the key it meets first (trust on first use). It logs its own key's fingerprint, for
the operator to check with brine key accept ID --finger. It reads /etc/brine/minion.hcl when -c
is not given and that file exists.`,
		Example: "  brine minion --master 10.0.0.1\n  brine minion -c /etc/brine/minion.hcl\n  brine minion --master 127.0.0.1 --id web1 --data-dir ./m1",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, diags := minion.LoadConfig(configPath(cfgPath, defaultMinionConfig), masterAddr, id, dataDir)
			if diags.HasErrors() {
				return withCode(exitNothing, diags)
			}
			// The minion reports its own version, for brine status (a claim, like every fact).
			if cfg.ExtraFacts == nil {
				cfg.ExtraFacts = map[string]string{}
			}
			cfg.ExtraFacts["brine_version"] = buildVersion()
			logger, err := lf.logger(os.Stderr)
			if err != nil {
				return withCode(exitNothing, err)
			}
			m, err := minion.New(cfg, logger)
			if err != nil {
				return withCode(exitNothing, err)
			}
			logger.Info("minion starting", "id", m.ID(), "finger", m.Key().Fingerprint())
			ctx, cancel := signalContext()
			defer cancel()
			return m.Run(ctx)
		},
	}
	c.Flags().StringVarP(&cfgPath, "config", "c", "", "minion config file (HCL; default "+defaultMinionConfig+" when it exists)")
	c.Flags().StringVar(&masterAddr, "master", "", "the master's host (or host:request-port); several masters of one store: m1,m2,m3")
	c.Flags().StringVar(&id, "id", "", "minion id (default: the host name)")
	c.Flags().StringVar(&dataDir, "data-dir", "", "data dir (default "+minion.DefaultDataDir+")")
	lf.register(c)
	return c
}

func init() {
	rootCmd.AddCommand(newMinionCmd())
}
