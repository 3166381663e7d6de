package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/brinecm/brine/control"
	"github.com/brinecm/brine/master"
)

func newStatusCmd() *cobra.Command {
	var (
		cf      controlFlags
		asJSON  bool
		siteDir string
	)
	c := &cobra.Command{
		Use:   "status [TARGET]",
		Short: "Show the minions a target names: connected or last seen, version, groups, last job",
		Long: `Status asks the master about each accepted minion TARGET names (default '*'): whether it is
connected (an authenticated request in the last 30 seconds) or when the master last heard from it
(since the master started), the brine version it reports (a fact: a claim), its groups (key groups
and the site's groups) and its last job among the 2000 most recent, with its outcome. The first line
says whether the master's store answers; a master that lost its database shows only that line and
exits 1. --json prints {"master", "store": {"kind", "up", "since", "error"}, "minions": [...]}.`,
		Example: "  brine status\n  brine status 'group:web' --json",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			target := "*"
			if len(args) == 1 {
				target = args[0]
			}
			req := control.StatusRequest{Target: target}
			var err error
			if req.SiteRef, err = siteRef(siteDir); err != nil {
				return err
			}
			cl, err := cf.client()
			if err != nil {
				return withCode(exitNothing, err)
			}
			r, err := cl.Status(cmd.Context(), req)
			if err != nil {
				return withCode(exitNothing, err)
			}
			w := cmd.OutOrStdout()
			now := time.Now()
			if asJSON {
				if r.Minions == nil {
					r.Minions = []control.MinionStatus{}
				}
				if err := json.NewEncoder(w).Encode(r); err != nil {
					return err
				}
			} else if h := r.Store; h != nil {
				fmt.Fprintln(w, storeLine(now, r.Master, *h))
			}
			if h := r.Store; h != nil && !h.Up {
				// Without its database the master knows no minion: the store line is all.
				return withCode(exitNothing, fmt.Errorf("%w: %s", master.ErrStoreLost, h.Error))
			}
			if asJSON {
				return nil
			}
			fmt.Fprintf(w, "%-24s %-16s %-16s %-24s %s\n", "ID", "STATE", "VERSION", "GROUPS", "LAST JOB")
			for _, s := range r.Minions {
				state := "connected"
				switch {
				case s.Connected && s.Master != "" && s.Master != r.Master:
					state = "on " + escapeOutput(s.Master)
				case s.Connected:
				case s.LastSeen.IsZero():
					state = "not seen"
				default:
					state = "seen " + age(now, s.LastSeen) + " ago"
				}
				job := "-"
				if j := s.LastJob; j != nil {
					dry := ""
					if j.DryRun {
						dry = " (dry run)"
					}
					job = fmt.Sprintf("%s %s%s, %s ago: %s", j.Kind, j.JID, dry, age(now, j.Created), j.Outcome)
					if j.Error != "" {
						job += " (" + escapeOutput(j.Error) + ")"
					}
				}
				if d := s.LastDrift; d != nil {
					switch {
					case d.Error != "":
						job += fmt.Sprintf("; drift check failed %s ago", age(now, d.Checked))
					case d.Drifted:
						job += fmt.Sprintf("; in drift (%d resource(s)), checked %s ago: brine drift %s", d.Changes, age(now, d.Checked), s.ID)
					default:
						job += fmt.Sprintf("; no drift, checked %s ago", age(now, d.Checked))
					}
				}
				fmt.Fprintf(w, "%-24s %-16s %-16s %-24s %s\n", s.ID, state, orDash(escapeOutput(s.Version)), orDash(statusGroups(s)), job)
			}
			return nil
		},
	}
	cf.register(c)
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.Flags().StringVar(&siteDir, "site", "", "a states tree whose site.hcl groups count (default: site in master.hcl)")
	return c
}

// storeLine is the first line of `brine status`: the answering master's store and whether it
// answers.
func storeLine(now time.Time, name string, h control.StoreHealth) string {
	line := "master " + escapeOutput(name) + ": store " + h.Kind
	switch {
	case !h.Up:
		line += ": LOST " + age(now, h.Since) + " ago, publishing no new jobs (" + escapeOutput(h.Error) + ")"
	case h.Kind == "files":
		line += ": up"
	case h.Since.IsZero():
		line += ": up"
	default:
		line += ": up for " + age(now, h.Since)
	}
	return line
}

func init() { rootCmd.AddCommand(newStatusCmd()) }

// statusGroups lists s's groups, a claimed one (the minion is in it only through its facts)
// marked "(claim)".
func statusGroups(s control.MinionStatus) string {
	gs := make([]string, len(s.Groups))
	for i, g := range s.Groups {
		gs[i] = g
		if slices.Contains(s.ClaimedGroups, g) {
			gs[i] += "(claim)"
		}
	}
	return strings.Join(gs, ",")
}
