package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/brinecm/brine/internal/daemoncli"
)

// version is set at build time with -ldflags "-X main.version=..."; a `go install` build has
// none and takes its module version (or VCS revision) from the build info.
var version = "dev"

func buildVersion() string { return daemoncli.Version(version) }

func init() {
	rootCmd.Version = buildVersion()
	rootCmd.SetVersionTemplate("brine {{.Version}}\n")
	rootCmd.AddCommand(&cobra.Command{
		Use:     "version",
		Short:   "Print brine's version (also: brine --version)",
		Example: "  brine version",
		Args:    cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "brine", rootCmd.Version)
		},
	})
}
