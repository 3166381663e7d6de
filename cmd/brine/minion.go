package main

import (
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/brinecm/brine/internal/minionbin"
	"github.com/brinecm/brine/internal/minioncli"
)

func newMinionCmd() *cobra.Command {
	var f minioncli.Flags
	c := &cobra.Command{
		Use:     "minion",
		Short:   minioncli.Short,
		Long:    minioncli.Long,
		Example: minioncli.Example,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return minioncli.Run(&f, buildVersion())
		},
	}
	f.Register(c.Flags())
	return c
}

func init() {
	rootCmd.AddCommand(newMinionCmd())
}

// runAsMinion runs brine as brine-minion when it is invoked under that name, and exits: where
// the minion-only binary is not at hand, the cloud bootstrap and `brine enroll` install the
// full binary as /usr/bin/brine-minion (see minionBinary).
func runAsMinion() {
	if filepath.Base(os.Args[0]) == minionbin.Name {
		os.Exit(minioncli.Main(buildVersion(), os.Args[1:]))
	}
}
