package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/brinecm/brine/cloud"
	"github.com/brinecm/brine/control"
	"github.com/brinecm/brine/enroll"
	"github.com/brinecm/brine/internal/minionbin"
)

// enrollMaster is enroll.Master over the control socket: the cloud provisioning calls (tokens,
// bootstrap information, the enrolment wait) plus a key lookup.
type enrollMaster struct{ *cloud.ControlMaster }

// KeyState is the state of id's key on the master, "" when it has none.
func (m enrollMaster) KeyState(ctx context.Context, id string) (string, error) {
	r, err := m.Client.KeyList(ctx, control.KeyListRequest{Glob: id})
	if err != nil {
		return "", err
	}
	for _, k := range r.Keys {
		if k.ID == id {
			return k.State, nil
		}
	}
	return "", nil
}

func newEnrollCmd() *cobra.Command {
	var (
		cf       controlFlags
		opts     enroll.Options
		identity string
		asJSON   bool
	)
	c := &cobra.Command{
		Use:   "enroll ssh://root@HOST[:PORT][?id=ID] ...",
		Short: "Make servers that already run into minions, over SSH",
		Long: `Enroll connects to each server over SSH as root, verifies its host key against a known_hosts
file or a given fingerprint (an unknown or different key stops that server before anything is
sent), uploads this brine binary compressed (the sha256 of what the server unpacks is checked
there before it is installed; a server with this binary already gets none),
writes /etc/brine/minion.hcl with a fresh single-use enrolment token for that server's minion id
alone, installs and starts the brine-minion systemd unit, and waits until the master reports
the minion enrolled. The minion id is the server's host name, or ?id=ID.

Prints one line per server; exits 0 when every server enrolled, 2 when any failed, 1 when none
was tried. Needs a running master with bootstrap_addr (or advertise_addr) set: minions reach it
at that address.`,
		Example: `  brine enroll ssh://root@10.0.0.5 ssh://root@10.0.0.6:2222 --groups web
  brine enroll 'ssh://root@10.0.0.7?id=db1' --host-key-fingerprint SHA256:m3Jd... --identity ~/.ssh/id_ed25519
  brine enroll ssh://root@web{1..20}.example.com --parallel 10 --json`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			targets := make([]enroll.Target, 0, len(args))
			for _, a := range args {
				t, err := enroll.ParseTarget(a)
				if err != nil {
					return withCode(exitNothing, err)
				}
				targets = append(targets, t)
			}
			if opts.HostKeys.Fingerprint != "" {
				if len(targets) > 1 {
					return withCode(exitNothing, errors.New("--host-key-fingerprint verifies one server: with several, use --known-hosts"))
				}
			} else if opts.HostKeys.KnownHosts == "" {
				home, err := os.UserHomeDir()
				if err != nil {
					return withCode(exitNothing, fmt.Errorf("no --known-hosts and no home directory: %w", err))
				}
				opts.HostKeys.KnownHosts = filepath.Join(home, ".ssh", "known_hosts")
			}
			auth, closeAgent, err := sshAuth(identity)
			if err != nil {
				return withCode(exitNothing, err)
			}
			defer closeAgent()
			opts.Auth = auth
			if opts.Binary == "" {
				exe, err := os.Executable()
				if err != nil {
					return withCode(exitNothing, err)
				}
				opts.Binary = minionbin.Beside(exe)
			}
			cl, err := cf.client()
			if err != nil {
				return withCode(exitNothing, err)
			}
			opts.Master = enrollMaster{&cloud.ControlMaster{Client: cl}}
			ctx, stop := signalContext()
			defer stop()
			out := cmd.OutOrStdout()
			enc := json.NewEncoder(out)
			results, err := enroll.Enroll(ctx, targets, opts, func(r enroll.Result) {
				if asJSON {
					_ = enc.Encode(r)
					return
				}
				if r.OK {
					fmt.Fprintf(out, "enrolled %s  %s in %s\n", r.ID, r.Target, r.Duration.Round(time.Millisecond))
				} else {
					fmt.Fprintf(out, "FAILED   %s  at %s: %s\n", r.Target, r.Stage, r.Error)
				}
			})
			if err != nil {
				return withCode(exitNothing, err)
			}
			failed := 0
			for _, r := range results {
				if !r.OK {
					failed++
				}
			}
			if !asJSON {
				fmt.Fprintf(out, "%d enrolled, %d failed\n", len(results)-failed, failed)
			}
			if failed > 0 {
				return withCode(exitFailed, nil)
			}
			return nil
		},
	}
	cf.register(c)
	f := c.Flags()
	f.StringSliceVar(&opts.Groups, "groups", nil, "groups the enrolment tokens grant (comma-separated)")
	f.StringVar(&opts.HostKeys.KnownHosts, "known-hosts", "", "OpenSSH known_hosts file the servers' host keys must be in (default ~/.ssh/known_hosts)")
	f.StringVar(&opts.HostKeys.Fingerprint, "host-key-fingerprint", "", "the one server's host key fingerprint, SHA256:... as `ssh-keygen -lf` prints it")
	f.StringVarP(&identity, "identity", "i", "", "SSH private key file (unencrypted; else use ssh-agent through SSH_AUTH_SOCK)")
	f.StringVar(&opts.Binary, "binary", "", "the minion binary to install as /usr/bin/brine-minion (default: brine-minion beside this binary, else this one)")
	f.IntVar(&opts.Parallel, "parallel", enroll.DefaultParallel, "servers enrolled at once")
	f.DurationVar(&opts.ConnectTimeout, "connect-timeout", enroll.DefaultConnectTimeout, "bound on connecting to a server and the SSH handshake")
	f.DurationVar(&opts.CommandTimeout, "command-timeout", enroll.DefaultCommandTimeout, "bound on the script run on a server (inspect, upload, configure)")
	f.DurationVar(&opts.EnrollTimeout, "enroll-timeout", enroll.DefaultEnrollTimeout, "bound on the wait for the master to report a minion enrolled")
	f.DurationVar(&opts.TokenTTL, "token-ttl", enroll.DefaultTokenTTL, "how long each enrolment token is valid")
	f.BoolVar(&asJSON, "json", false, "print one JSON object per server: {target, id, ok, stage, uploaded, error, duration_ns, stages_ns}")
	return c
}

// sshAuth is the key file, if given, then the agent at SSH_AUTH_SOCK, if any; the returned
// func closes the agent connection.
func sshAuth(identity string) ([]ssh.AuthMethod, func(), error) {
	var auth []ssh.AuthMethod
	closeAgent := func() {}
	if identity != "" {
		pem, err := os.ReadFile(identity)
		if err != nil {
			return nil, closeAgent, fmt.Errorf("--identity: %w", err)
		}
		signer, err := ssh.ParsePrivateKey(pem)
		var pm *ssh.PassphraseMissingError
		if errors.As(err, &pm) {
			return nil, closeAgent, fmt.Errorf("--identity %s is encrypted: add it to ssh-agent (ssh-add) and leave out --identity", identity)
		}
		if err != nil {
			return nil, closeAgent, fmt.Errorf("--identity %s: %w", identity, err)
		}
		auth = append(auth, ssh.PublicKeys(signer))
	}
	if sock := os.Getenv("SSH_AUTH_SOCK"); sock != "" {
		conn, err := net.DialTimeout("unix", sock, 5*time.Second)
		if err != nil {
			if identity == "" {
				return nil, closeAgent, fmt.Errorf("ssh-agent at SSH_AUTH_SOCK: %w", err)
			}
		} else {
			closeAgent = func() { conn.Close() }
			auth = append(auth, ssh.PublicKeysCallback(agent.NewClient(conn).Signers))
		}
	}
	if len(auth) == 0 {
		return nil, closeAgent, errors.New("no SSH authentication: give --identity FILE or run an ssh-agent (SSH_AUTH_SOCK)")
	}
	return auth, closeAgent, nil
}

func init() {
	rootCmd.AddCommand(newEnrollCmd())
}
