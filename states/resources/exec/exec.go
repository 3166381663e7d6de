package exec

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/brinecm/brine/states"
	"github.com/brinecm/brine/states/resources/internal/shell"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
)

// Type is the `exec` resource type: a command run when its guards (creates, unless, only_if) say so, or when notified.
var Type = &states.Type{Name: "exec", Labels: 1, ShellGuards: true, Decode: decodeExec}

// execDefaultTimeout bounds a command (and each guard) when the bundle sets no timeout.
const execDefaultTimeout = 5 * time.Minute

type execConfig struct {
	Command     string            `hcl:"command"`
	Creates     string            `hcl:"creates,optional"`
	Unless      string            `hcl:"unless,optional"`
	Env         map[string]string `hcl:"env,optional"`
	Cwd         string            `hcl:"cwd,optional"`
	Timeout     string            `hcl:"timeout,optional"`
	RefreshOnly bool              `hcl:"refresh_only,optional"`
}

// Exec runs a shell command when its guards say it is needed (or, with refresh_only, when
// notified). Its Check runs the `unless` and `only_if` guard commands, which by contract have no
// side effects; nothing else of the host changes in a check.
type Exec struct {
	name        string
	command     string
	creates     string
	unless      string
	onlyIf      string
	env         map[string]string
	cwd         string
	timeout     time.Duration
	refreshOnly bool
}

// execRun is the run-scoped memory of one exec: whether its command already ran in this run.
type execRun struct{ ran bool }

func decodeExec(req *states.DecodeRequest) (states.Resource, hcl.Diagnostics) {
	var cfg execConfig
	diags := gohcl.DecodeBody(req.Body, req.Ctx, &cfg)
	if diags.HasErrors() {
		return nil, diags
	}
	subject := req.AttrRange
	e := &Exec{name: req.Name, command: cfg.Command, creates: cfg.Creates, unless: cfg.Unless,
		onlyIf: req.OnlyIf, env: cfg.Env, cwd: cfg.Cwd, timeout: execDefaultTimeout, refreshOnly: cfg.RefreshOnly}
	if strings.TrimSpace(cfg.Command) == "" {
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Empty command",
			Detail: "command is the shell command to run (with /bin/sh -c); it cannot be empty.", Subject: subject("command")})
	}
	if cfg.Creates != "" && !filepath.IsAbs(cfg.Creates) {
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid creates",
			Detail: fmt.Sprintf("creates must be an absolute path (got %q): the command is skipped when that path exists.", cfg.Creates), Subject: subject("creates")})
	}
	if cfg.Cwd == "" {
		e.cwd = "/"
	} else if !filepath.IsAbs(cfg.Cwd) {
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid cwd",
			Detail: fmt.Sprintf("cwd must be an absolute directory (got %q).", cfg.Cwd), Subject: subject("cwd")})
	}
	for k := range cfg.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid env name",
				Detail: fmt.Sprintf("Environment variable name %q is empty or holds '=' or NUL.", k), Subject: subject("env")})
		}
	}
	if cfg.Timeout != "" {
		d, err := time.ParseDuration(cfg.Timeout)
		if cfg.Timeout == "0" {
			d, err = 0, nil
		}
		if err != nil || d < 0 {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid timeout",
				Detail: fmt.Sprintf("timeout is a duration like \"30s\" or \"10m\" (\"0\" for none); got %q.", cfg.Timeout), Subject: subject("timeout")})
		}
		e.timeout = d
	}
	if diags.HasErrors() {
		return nil, diags
	}
	return e, diags
}

func (e *Exec) runState(env *states.Env) *execRun {
	v, _ := env.Cached("exec-run:"+e.name, func() (any, error) { return &execRun{}, nil })
	return v.(*execRun)
}

// Check reports whether the command needs to run: not when it already ran in this run (then only a
// missing `creates` is a difference), not when refresh_only (it runs on notify only), not when
// `creates` exists, `unless` succeeds or `only_if` fails.
func (e *Exec) Check(ctx context.Context, env *states.Env) (string, error) {
	if e.runState(env).ran {
		if e.creates != "" && !pathExists(e.creates) {
			return fmt.Sprintf("command ran but %s does not exist", e.creates), nil
		}
		return "", nil
	}
	if e.refreshOnly {
		return "", nil
	}
	need, why, err := e.needed(ctx)
	if err != nil || !need {
		return "", err
	}
	return "run: " + e.command + why, nil
}

// needed evaluates the guards. why says which guard asked for the run.
func (e *Exec) needed(ctx context.Context) (need bool, why string, err error) {
	if e.creates != "" {
		if pathExists(e.creates) {
			return false, "", nil
		}
		why = fmt.Sprintf(" (%s missing)", e.creates)
	}
	if e.unless != "" {
		code, err := e.guard(ctx, "unless", e.unless)
		if err != nil || code == 0 {
			return false, "", err
		}
	}
	if e.onlyIf != "" {
		code, err := e.guard(ctx, "only_if", e.onlyIf)
		if err != nil || code != 0 {
			return false, "", err
		}
	}
	return true, why, nil
}

func (e *Exec) guard(ctx context.Context, which, script string) (int, error) {
	res, err := shell.Run(ctx, shell.Cmd{Script: script, Env: e.env, Dir: e.cwd, Timeout: e.timeout})
	if err != nil {
		return 0, fmt.Errorf("%s guard %q: %w%s", which, script, err, shell.OutputSuffix(res.Output))
	}
	return res.Exit, nil
}

// Apply runs the command. A non-zero exit fails the resource with the tail of its output.
func (e *Exec) Apply(ctx context.Context, env *states.Env) error {
	return e.run(ctx, env)
}

func (e *Exec) run(ctx context.Context, env *states.Env) error {
	if st, err := os.Stat(e.cwd); err != nil || !st.IsDir() {
		return fmt.Errorf("cwd %s is not a directory", e.cwd)
	}
	res, err := shell.Run(ctx, shell.Cmd{Script: e.command, Env: e.env, Dir: e.cwd, Timeout: e.timeout})
	if err != nil {
		return fmt.Errorf("command %q: %w%s", e.command, err, shell.OutputSuffix(res.Output))
	}
	if res.Exit != 0 {
		return fmt.Errorf("command %q exited with status %d%s", e.command, res.Exit, shell.OutputSuffix(res.Output))
	}
	e.runState(env).ran = true
	return nil
}

// Notify runs the command, subject to its guards, unless it already ran in this run.
func (e *Exec) Notify(ctx context.Context, env *states.Env) error {
	if e.runState(env).ran {
		return nil
	}
	need, _, err := e.needed(ctx)
	if err != nil || !need {
		return err
	}
	return e.run(ctx, env)
}

func pathExists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}
