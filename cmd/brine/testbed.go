package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/brinecm/brine/testbed"
)

func newTestbedCmd() *cobra.Command {
	var name string
	tb := &cobra.Command{
		Use:   "testbed",
		Short: "A real multi-host cluster on this machine (network namespaces, overlay roots), to poke at by hand",
		Long: `testbed makes hosts on this machine: each has its own network namespace (address on a
bridge, its own iptables and tun devices) and its own overlay root (its own /etc and dpkg
database), with a local apt repository of tiny test packages. It needs root.`,
		Example: `  brine testbed up 3                 # hosts h1 h2 h3
  brine testbed exec h1 -- ip -4 addr
  brine testbed exec h2 -- apt-get install -y brine-hello
  brine testbed down`,
	}
	tb.PersistentFlags().StringVar(&name, "name", "dev", "cluster name (letters and digits)")

	var systemd bool
	up := &cobra.Command{
		Use:   "up N|HOST...",
		Short: "Start a cluster of N hosts (h1..hN) or of the named hosts; it runs until `testbed down`",
		Long: `up starts a cluster of N hosts (h1..hN) or of the named hosts; it runs until
` + "`brine testbed down`" + `. With --systemd every host boots systemd as its PID 1 (in its own PID
and cgroup namespaces) and up returns once each reports ` + "`systemctl is-system-running`" + ` =
running, or degraded (then the failed units are printed).`,
		Example: `  brine testbed up 3
  brine testbed up --name lab web1 db1
  brine testbed up --systemd 4`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			avail := testbed.Available
			if systemd {
				avail = testbed.SystemdAvailable
			}
			if err := avail(); err != nil {
				return withCode(exitNothing, err)
			}
			hosts := args
			if n, err := strconv.Atoi(args[0]); err == nil && len(args) == 1 {
				if n < 1 || n > 200 {
					return withCode(exitNothing, fmt.Errorf("up %d: between 1 and 200 hosts", n))
				}
				hosts = nil
				for i := 1; i <= n; i++ {
					hosts = append(hosts, fmt.Sprintf("h%d", i))
				}
			}
			c, err := testbed.Up(cmd.Context(), testbed.Options{Name: name, Hosts: hosts, Systemd: systemd})
			if err != nil {
				return withCode(exitNothing, err)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "cluster %s: bridge %s, shared dir %s (/srv/brine in hosts)\n", name, c.BridgeAddr(), c.SharedDir())
			for _, h := range c.Hosts() {
				state := ""
				if h.Systemd() {
					state = "  systemd: running"
					if f := h.FailedUnits(); len(f) > 0 {
						state = "  systemd: degraded: failed " + strings.Join(f, ", ")
					}
				}
				fmt.Fprintf(w, "  %-12s %s%s\n", h.Name(), h.Addr(), state)
			}
			fmt.Fprintf(w, "run commands with: brine testbed exec --name %s HOST -- CMD; remove with: brine testbed down %s\n", name, name)
			return nil
		},
	}
	down := &cobra.Command{
		Use:     "down [NAME]",
		Short:   "Stop a cluster and remove everything it made",
		Example: "  brine testbed down\n  brine testbed down lab",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n := name
			if len(args) == 1 {
				n = args[0]
			}
			if err := testbed.Down(n); err != nil {
				return withCode(exitNothing, err)
			}
			return nil
		},
	}
	execCmd := &cobra.Command{
		Use:   "exec HOST -- CMD...",
		Short: "Run a command inside a host of a running cluster, on this terminal",
		Example: `  brine testbed exec h1 -- ping -c1 10.213.1.3
  brine testbed exec --name lab web1 -- bash`,
		Args:        cobra.MinimumNArgs(2),
		Annotations: map[string]string{rawOutput: "yes"}, // an interactive session in the host
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := testbed.Attach(name)
			if err != nil {
				return withCode(exitNothing, err)
			}
			h := c.Host(args[0])
			if h == nil {
				return withCode(exitNothing, fmt.Errorf("cluster %s has no host %q", name, args[0]))
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
			defer stop()
			signal.Ignore(os.Interrupt) // Ctrl-C goes to the command in the host
			run := h.Command(ctx, args[1:]...)
			run.Stdin, run.Stdout, run.Stderr = os.Stdin, cmd.OutOrStdout(), cmd.ErrOrStderr()
			err = run.Run()
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return withCode(ee.ExitCode(), nil)
			}
			if err != nil {
				return withCode(exitNothing, err)
			}
			return nil
		},
	}
	ls := &cobra.Command{
		Use:     "ls",
		Short:   "List running clusters",
		Example: "  brine testbed ls",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, n := range testbed.List() {
				fmt.Fprintln(cmd.OutOrStdout(), n)
			}
			return nil
		},
	}
	clean := &cobra.Command{
		Use:     "clean",
		Short:   "Remove every testbed cluster and the leftovers of crashed runs (also clusters of tests still running)",
		Example: "  brine testbed clean",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := testbed.CleanAll(); err != nil {
				return withCode(exitNothing, err)
			}
			return nil
		},
	}
	up.Flags().BoolVar(&systemd, "systemd", false, "hosts boot systemd as PID 1 (production-like; needs systemd installed)")
	tb.AddCommand(up, down, execCmd, ls, clean)
	return tb
}

func init() { rootCmd.AddCommand(newTestbedCmd()) }
