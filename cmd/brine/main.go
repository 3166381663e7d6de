// Command brine is the one binary of brine: master, minion, operator CLI and masterless apply.
// This package only parses flags and wires the core packages together; each subcommand lives in
// its own file and registers itself on rootCmd from an init function.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/hashicorp/hcl/v2"
	"github.com/spf13/cobra"

	"github.com/brinecm/brine/internal/termtext"
	"github.com/brinecm/brine/states"
)

// Exit codes, as DESIGN.md fixes them.
const (
	exitOK      = 0 // every targeted minion / resource succeeded
	exitNothing = 1 // nothing applied: usage, bundle or connection error
	exitFailed  = 2 // some resource failed or a minion did not return
)

// exitError carries an exit code out of a command's RunE.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

// withCode makes a command exit with code; a nil err means the command already printed why.
func withCode(code int, err error) error { return &exitError{code: code, err: err} }

var rootCmd = &cobra.Command{
	Use:           "brine",
	Short:         "brine: push configuration management with signed HCL bundles over ZeroMQ",
	SilenceUsage:  true,
	SilenceErrors: true,
	Example: `  brine local apply ./examples/hello --var root=/tmp/hello   # apply a bundle here, no master
  brine master                              # run a master with built-in defaults
  brine minion --master 10.0.0.1            # run a minion that connects to it
  brine apply 'group:app' ./states/app      # push a bundle to minions`,
	// Everything a command prints goes through termtext: returns, diffs, errors, diagnostics
	// and facts come from minions, and a terminal acts on the control characters they may
	// hold. Human output shows them escaped (\x1b); in --json output encoding/json has
	// escaped the C0 controls already and termtext escapes DEL, C1 and bidi characters as \u.
	PersistentPreRun: func(cmd *cobra.Command, _ []string) {
		if cmd.Annotations[rawOutput] != "" {
			return
		}
		cmd.SetOut(termtext.NewWriter(cmd.OutOrStdout(), states.UseColor(os.Stdout)))
		cmd.SetErr(termtext.NewWriter(cmd.ErrOrStderr(), states.UseColor(os.Stderr)))
	},
}

// rawOutput is the annotation of commands whose output is a program's own terminal session
// (testbed exec): not escaped.
const rawOutput = "raw-output"

// stderr is standard error for what main and helpers print outside a command's writers.
var stderr = termtext.NewWriter(os.Stderr, false)

// signalContext is cancelled by Ctrl-C or SIGTERM, so long commands stop cleanly.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func main() {
	runAsMinion()
	err := rootCmd.Execute()
	if err == nil {
		os.Exit(exitOK)
	}
	code := exitNothing
	var ee *exitError
	if errors.As(err, &ee) {
		code, err = ee.code, ee.err
	}
	var diags hcl.Diagnostics
	switch {
	case err == nil:
	case errors.As(err, &diags):
		states.WriteFileDiagnostics(stderr, diags, states.UseColor(os.Stderr))
	default:
		fmt.Fprintln(stderr, "brine:", err)
	}
	os.Exit(code)
}
