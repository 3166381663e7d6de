package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/brinecm/brine/control"
)

func newDriftCmd() *cobra.Command {
	var (
		cf     controlFlags
		asJSON bool
		all    bool
	)
	c := &cobra.Command{
		Use:   "drift [TARGET]",
		Short: "List the hosts whose last drift check found differences from the site, with the diffs",
		Long: `Drift prints, for each minion TARGET names (default '*'), the last check of a schedule in drift
mode (master.hcl: schedule "NAME" { mode = "drift" ... }) when it found differences or failed: the
resources a converge would change, with their diffs. A check is a dry run: it changes nothing.
--all also lists the hosts whose last check found none. Hosts never checked are not listed.`,
		Example: "  brine drift\n  brine drift 'group:web' --json",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			target := "*"
			if len(args) == 1 {
				target = args[0]
			}
			cl, err := cf.client()
			if err != nil {
				return withCode(exitNothing, err)
			}
			r, err := cl.Drift(cmd.Context(), control.DriftRequest{Target: target, All: all})
			if err != nil {
				return withCode(exitNothing, err)
			}
			w := cmd.OutOrStdout()
			if asJSON {
				if r.Records == nil {
					r.Records = []control.DriftRecord{}
				}
				return json.NewEncoder(w).Encode(r.Records)
			}
			if len(r.Records) == 0 {
				fmt.Fprintln(w, "no drift found by the last checks")
				return nil
			}
			now := time.Now()
			for _, d := range r.Records {
				state := "in drift"
				switch {
				case d.Error != "":
					state = "check failed: " + escapeOutput(d.Error)
				case !d.Drifted:
					state = "as the site says"
				}
				fmt.Fprintf(w, "%s: %s (checked %s ago by schedule %s, brine jobs show %s)\n", d.Minion, state, age(now, d.Checked), escapeOutput(d.Schedule), d.JID)
				for _, c := range d.Changes {
					fmt.Fprintf(w, "  %s\n", escapeOutput(c.Address))
					for _, l := range strings.Split(strings.TrimRight(c.Diff, "\n"), "\n") {
						if l != "" {
							fmt.Fprintf(w, "      %s\n", escapeOutput(l))
						}
					}
				}
			}
			return nil
		},
	}
	cf.register(c)
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.Flags().BoolVar(&all, "all", false, "also list the hosts whose last check found no difference")
	return c
}

func init() { rootCmd.AddCommand(newDriftCmd()) }
