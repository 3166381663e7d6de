package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/brinecm/brine/control"
)

func newKeyCmd() *cobra.Command {
	key := &cobra.Command{
		Use:   "key",
		Short: "Manage minion keys and enrolment tokens on the master",
		Example: `  brine key list
  brine key accept web1 --groups app
  brine key accept web1 --groups app --finger 3f:9a:...   # only the key you checked
  brine key accept --all
  brine key reject 'old*'
  brine key finger
  brine key accept-tinc web1
  brine key token create --id web1 --groups app --ttl 1h`,
	}
	action := func(name, short, example string, extra func(*keyArgs)) *cobra.Command {
		var (
			cf     controlFlags
			all    bool
			asJSON bool
			groups string
			finger string
		)
		c := &cobra.Command{
			Use:     name + " [GLOB]",
			Short:   short,
			Example: example,
			Args:    cobra.MaximumNArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				var req keyArgs
				switch {
				case len(args) == 1:
					req.Glob = args[0]
				case all || name == "list" || name == "finger":
					req.Glob = "*"
				default:
					return withCode(exitNothing, fmt.Errorf("key %s: name a minion (a glob) or pass --all", name))
				}
				if cmd.Flags().Changed("groups") {
					req.Groups = splitList(groups)
					if req.Groups == nil {
						req.Groups = []string{}
					}
				}
				req.Finger = finger
				if extra != nil {
					extra(&req)
				}
				cl, err := cf.client()
				if err != nil {
					return withCode(exitNothing, err)
				}
				r, err := keyOp(cmd.Context(), cl, name, req)
				if err != nil {
					return withCode(exitNothing, err)
				}
				w := cmd.OutOrStdout()
				if asJSON {
					switch name {
					case "list", "finger":
						return json.NewEncoder(w).Encode(map[string]any{"master_finger": r.Finger, "keys": r.Keys})
					case "accept":
						return json.NewEncoder(w).Encode(map[string]any{"ids": r.IDs, "keys": r.Keys})
					}
					return json.NewEncoder(w).Encode(map[string]any{"ids": r.IDs})
				}
				switch name {
				case "list":
					now := time.Now()
					fmt.Fprintf(w, "%-9s %-24s %-23s %-17s %-5s %s\n", "STATE", "ID", "FINGER", "SOURCE", "AGE", "GROUPS")
					for _, k := range r.Keys {
						fmt.Fprintf(w, "%-9s %-24s %-23s %-17s %-5s %s\n", k.State, k.ID, shortFinger(k.Finger), orDash(k.Source), age(now, k.Created), keyGroups(k))
						if len(k.TincPending) > 0 {
							fmt.Fprintf(w, "          %-24s tinc key changed (%s): brine key accept-tinc %s\n", "", strings.Join(k.TincPending, ","), k.ID)
						}
						if k.Master != "" && k.Master != r.Master {
							// Masters sharing a store: say where the minion is connected.
							fmt.Fprintf(w, "          %-24s connected to master %s\n", "", k.Master)
						}
					}
				case "accept":
					if len(r.Keys) == 0 {
						fmt.Fprintf(w, "no key matched %q\n", req.Glob)
						return withCode(exitNothing, nil)
					}
					now := time.Now()
					for _, k := range r.Keys {
						fmt.Fprintf(w, "accepted %s\n  finger  %s\n  source  %s, first presented %s ago\n  groups  %s\n",
							k.ID, k.Finger, orDash(k.Source), age(now, k.Created), orDash(strings.Join(k.Groups, ",")))
						if len(k.Requested) > 0 && !cmd.Flags().Changed("groups") {
							fmt.Fprintf(cmd.ErrOrStderr(), "%s asked for groups %s: not granted (brine key groups %s --groups ...)\n",
								k.ID, strings.Join(k.Requested, ","), k.ID)
						}
					}
				case "finger":
					fmt.Fprintf(w, "master    %s\n", r.Finger)
					for _, k := range r.Keys {
						if ok, _ := pathMatch(req.Glob, k.ID); ok {
							fmt.Fprintf(w, "%-9s %-30s %s\n", k.State, k.ID, k.Finger)
						}
					}
				default:
					if len(r.IDs) == 0 {
						fmt.Fprintf(w, "no key matched %q\n", req.Glob)
						return withCode(exitNothing, nil)
					}
					for _, id := range r.IDs {
						fmt.Fprintf(w, "%s %s\n", pastTense(name), id)
					}
				}
				return nil
			},
		}
		cf.register(c)
		c.Flags().BoolVar(&all, "all", false, "every key")
		c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
		if name == "accept" || name == "groups" {
			c.Flags().StringVar(&groups, "groups", "", "grant these groups (comma-separated); a minion's own request is never granted")
		}
		if name == "accept" {
			c.Flags().StringVar(&finger, "finger", "", "accept only the key with this fingerprint (from the minion's log or brine key finger)")
		}
		return c
	}
	var includeRejected bool
	accept := action("accept", "Accept pending keys (and rejected ones with --include-rejected)",
		"  brine key accept web1 --groups app,web\n  brine key accept --all", func(r *keyArgs) { r.All = includeRejected })
	accept.Flags().BoolVar(&includeRejected, "include-rejected", false, "also accept rejected keys")
	var network string
	acceptTinc := action("accept-tinc", "Pin the changed tinc public keys that minions reported (shown by key list)",
		"  brine key accept-tinc web1\n  brine key accept-tinc web1 --network ghost",
		func(r *keyArgs) { r.Network = network })
	acceptTinc.Flags().StringVar(&network, "network", "*", "only these tinc networks (a glob)")
	key.AddCommand(
		acceptTinc,
		action("list", "List minion keys by state", "  brine key list\n  brine key list 'web*' --json", nil),
		accept,
		action("reject", "Reject keys; their sessions end, so they read no later job", "  brine key reject web3", nil),
		action("delete", "Delete keys; their sessions end; a deleted minion comes back as pending", "  brine key delete 'old*'", nil),
		action("groups", "Set the groups of accepted minions", "  brine key groups web1 --groups app,web", nil),
		action("finger", "Show the master's fingerprint and those of minion keys", "  brine key finger\n  brine key finger web1", nil),
		newTokenCmd(),
	)
	return key
}

func newTokenCmd() *cobra.Command {
	token := &cobra.Command{
		Use:     "token",
		Short:   "Enrolment tokens: single use, expiring, scoped to groups and an id (or id glob)",
		Example: "  brine key token create --id web1 --groups app --ttl 1h",
	}
	var (
		cf     controlFlags
		groups string
		id     string
		ttl    time.Duration
		asJSON bool
	)
	create := &cobra.Command{
		Use:     "create",
		Short:   "Create a token that enrols one minion into groups",
		Example: "  brine key token create --id web1 --groups app --ttl 1h\n  brine key token create --id 'web*' --groups app\n  # then, on the new host: token = \"brn2-...\" in minion.hcl (it also pins this master)",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := cf.client()
			if err != nil {
				return withCode(exitNothing, err)
			}
			r, err := cl.TokenCreate(cmd.Context(), control.TokenRequest{ID: id, Groups: splitList(groups), TTL: ttl})
			if err != nil {
				return withCode(exitNothing, err)
			}
			if asJSON {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(map[string]any{"token": r.Token, "expires": r.Expires})
			}
			fmt.Fprintln(cmd.OutOrStdout(), r.Token)
			scope := "any id"
			if id != "" {
				scope = "id " + id
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "single use, %s, groups %q, expires %s\n", scope, groups, r.Expires.Local().Format(time.DateTime))
			return nil
		},
	}
	cf.register(create)
	create.Flags().StringVar(&groups, "groups", "", "groups the enrolled minion joins (comma-separated)")
	create.Flags().DurationVar(&ttl, "ttl", time.Hour, "how long the token is valid")
	create.Flags().StringVar(&id, "id", "", "the minion id, or an id glob such as 'web*', the token enrols (default: any id)")
	create.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	token.AddCommand(create)
	return token
}

// keyArgs are the arguments of a key command: a glob and its flags.
type keyArgs struct {
	Glob    string
	Groups  []string
	Finger  string
	All     bool // accept: rejected keys too
	Network string
}

// keyResult is what a key command prints.
type keyResult struct {
	IDs    []string
	Keys   []control.KeyInfo
	Finger string // the master's (list, finger)
	Master string // the master's name (list, finger)
}

// keyOp sends the key op of the command name.
func keyOp(ctx context.Context, cl *control.Client, name string, a keyArgs) (keyResult, error) {
	var r control.KeyIDs
	var err error
	switch name {
	case "list", "finger":
		l, err := cl.KeyList(ctx, control.KeyListRequest{Glob: a.Glob})
		return keyResult{Keys: l.Keys, Finger: l.MasterFinger, Master: l.Master}, err
	case "accept":
		acc, err := cl.KeyAccept(ctx, control.KeyAcceptRequest{Glob: a.Glob, Groups: a.Groups, All: a.All, Finger: a.Finger})
		return keyResult{IDs: acc.IDs, Keys: acc.Keys}, err
	case "reject":
		r, err = cl.KeyReject(ctx, control.KeyRequest{Glob: a.Glob})
	case "delete":
		r, err = cl.KeyDelete(ctx, control.KeyRequest{Glob: a.Glob})
	case "groups":
		r, err = cl.KeyGroups(ctx, control.KeyGroupsRequest{Glob: a.Glob, Groups: a.Groups})
	case "accept-tinc":
		r, err = cl.KeyAcceptTinc(ctx, control.KeyAcceptTincRequest{Glob: a.Glob, Network: a.Network})
	default:
		return keyResult{}, fmt.Errorf("unknown key action %q", name)
	}
	return keyResult{IDs: r.IDs}, err
}

// shortFinger is the first eight bytes of a fingerprint, enough to tell keys apart in a list;
// `brine key finger` and `brine key accept` print it whole.
func shortFinger(f string) string {
	if len(f) > 23 {
		return f[:23]
	}
	return f
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// age is a compact duration since t ("45s", "3m", "2h", "5d").
func age(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

// keyGroups shows a key's granted groups, and what a minion asked for as not granted.
func keyGroups(k control.KeyInfo) string {
	g := orDash(strings.Join(k.Groups, ","))
	if len(k.Requested) > 0 && k.State != "accepted" {
		g += " (requested, not granted: " + strings.Join(k.Requested, ",") + ")"
	}
	return g
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func pastTense(action string) string {
	switch action {
	case "accept":
		return "accepted"
	case "reject":
		return "rejected"
	case "delete":
		return "deleted"
	case "accept-tinc":
		return "accepted the tinc key of"
	}
	return "updated"
}

func init() {
	rootCmd.AddCommand(newKeyCmd())
}
