package main

import (
	"github.com/spf13/cobra"

	"github.com/brinecm/brine/cmd/brine/internal/demo"
)

func newDemoCmd() *cobra.Command {
	var opts demo.Options
	c := &cobra.Command{
		Use:   "demo",
		Short: "Run the reference deployment on 4 testbed hosts: enrol, converge, prove mesh and firewall, tear down",
		Long: `demo starts a master and four testbed hosts (core, cache, app, db) on this machine, each running a
real brine-minion that enrols with a single-use token, applies examples/ghost-pro to all of them
(packages, a tinc mesh, ufw denying all but SSH, the services), proves that every host pings every
other over the mesh and that a port the firewall closes is refused from outside and served over the
mesh, applies again to show nothing changes, prints a summary with timings and removes everything.
It needs root (network namespaces and overlay mounts).

With --real it runs examples/ghost-pro-real on real Debian packages instead: the hosts boot
systemd and run their minions from the brine-minion unit, and install nginx (cache), MariaDB
(db) and a small Python web application (app) from this machine's Debian mirror (through a
proxy on the testbed bridge; the packages are kept in /var/cache/brine-testbed/apt, so later
runs download nothing). It proves that an HTTP request to cache's public address is proxied by
nginx over the mesh to the app, which reads a row from MariaDB over the mesh, and that the
database is refused from outside the mesh.`,
		Example: "  sudo brine demo\n  brine demo --bundle ./examples/ghost-pro\n  sudo brine demo --real",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signalContext()
			defer stop()
			opts.Out = cmd.OutOrStdout()
			if err := demo.Run(ctx, opts); err != nil {
				return withCode(exitFailed, err)
			}
			return nil
		},
	}
	c.Flags().StringVar(&opts.Bundle, "bundle", "", "the reference deployment bundle (default examples/ghost-pro, with --real examples/ghost-pro-real)")
	c.Flags().BoolVar(&opts.Real, "real", false, "real Debian packages from this machine's mirror, on systemd hosts")
	c.Flags().BoolVar(&opts.Keep, "keep", false, "leave the hosts running afterwards, for inspection (the master stops)")
	c.Flags().StringVar(&opts.Binary, "binary", "", "the brine binary; the hosts run brine-minion beside it, else this binary under that name (default: this one)")
	return c
}

func init() { rootCmd.AddCommand(newDemoCmd()) }
