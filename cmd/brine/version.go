package main

import (
	"fmt"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=..."; a `go install` build has
// none and takes its module version (or VCS revision) from the build info.
var version = "dev"

func buildVersion() string {
	if version != "dev" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return version
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			return "dev-" + s.Value[:12]
		}
	}
	return version
}

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
