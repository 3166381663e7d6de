// Package bounded compiles bundles in a child process whose memory and CPU the kernel bounds.
//
// Evaluating a bundle's expressions has no bound of its own: nested for expressions multiply,
// templates double strings at every level, and some go-cty functions (toset, setproduct) are
// quadratic or worse in their arguments. Whoever can submit a bundle (or feed facts into one
// through peers()) could otherwise make the master, a minion or the CLI exhaust the host. The
// child is the same binary, re-executed with BRINE_BOUNDED_COMPILE=1 (see init): it limits its
// own data segment (RLIMIT_DATA, which counts every anonymous mapping the Go runtime makes) and
// CPU time (RLIMIT_CPU) before it reads anything, runs on one thread at a lower priority, and
// answers with the diagnostics only; the parent kills it at a wall-clock deadline and reads at
// most MaxOutput bytes of its answer. docs/design.md, "Bounded compilation", says why a child
// process and not a budget inside the evaluator.
package bounded

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/hcl/v2"
	"golang.org/x/sys/unix"

	"github.com/brinecm/brine/states"
	"github.com/brinecm/brine/states/resources/builtin"
)

// Limits of one compile child. The zero value of a field means its default.
type Limits struct {
	// Memory bounds the child's data segment (every heap and goroutine stack of the Go
	// runtime): the bundle, the values its expressions make and the runtime itself.
	Memory int64
	// CPU bounds the child's CPU time; the wall-clock deadline is twice that.
	CPU time.Duration
}

// Defaults: a bundle that compiles to 10,000 resources (states.MaxResources) with its largest
// files (states.MaxBundleBytes) fits well within them (BENCHMARKS.md, "Bounded compilation").
const (
	DefaultMemory = 1 << 30
	DefaultCPU    = 30 * time.Second
	// MaxOutput bounds the answer the parent reads: diagnostics of at most 8 compiles.
	MaxOutput = 4 << 20
	// MaxConcurrent bounds the compile children of one process at a time, so that many
	// submissions at once cannot multiply the memory bound.
	MaxConcurrent = 2
)

const envChild = "BRINE_BOUNDED_COMPILE"

// ErrBound is wrapped by every error that says a compile went over a limit.
var ErrBound = errors.New("over the bound of a compile")

var slots = make(chan struct{}, MaxConcurrent)

// Request is what the parent sends the child.
type request struct {
	Bundle  []byte           `json:"bundle"` // states.Bundle.Marshal
	Root    string           `json:"root"`
	Options []states.Options `json:"options"`
	// UntilOK stops at the first compile without errors (the master's validation).
	UntilOK bool `json:"until_ok"`
}

type answer struct {
	Results []Result `json:"results"`
}

// Result is the outcome of one compile (one entry of Options).
type Result struct {
	Diags     []diag `json:"diags,omitempty"`
	Resources int    `json:"resources"`
}

// Diagnostics returns the compile's diagnostics.
func (r Result) Diagnostics() hcl.Diagnostics {
	out := make(hcl.Diagnostics, len(r.Diags))
	for i, d := range r.Diags {
		out[i] = &hcl.Diagnostic{Severity: d.Severity, Summary: d.Summary, Detail: d.Detail, Subject: d.Subject, Context: d.Context}
	}
	return out
}

type diag struct {
	Severity hcl.DiagnosticSeverity `json:"severity"`
	Summary  string                 `json:"summary"`
	Detail   string                 `json:"detail,omitempty"`
	Subject  *hcl.Range             `json:"subject,omitempty"`
	Context  *hcl.Range             `json:"context,omitempty"`
}

// Compile compiles the bundle packed (states.Bundle.Pack; root names its files in diagnostics)
// once for each entry of opts, in a child process under lim, and returns the result of each
// (with untilOK, up to the first that compiles without errors; a bundle that does not load has
// one result, its diagnostics). An error says the child could not answer: it went over a limit
// (errors.Is ErrBound), ctx ended, or it could not run.
func Compile(ctx context.Context, packed []byte, root string, opts []states.Options, untilOK bool, lim Limits) ([]Result, error) {
	if lim.Memory <= 0 {
		lim.Memory = DefaultMemory
	}
	if lim.CPU <= 0 {
		lim.CPU = DefaultCPU
	}
	if os.Getenv(envChild) != "" {
		return nil, errors.New("compile child: refusing to start another from inside one")
	}
	req, err := json.Marshal(request{Bundle: packed, Root: root, Options: opts, UntilOK: untilOK})
	if err != nil {
		return nil, fmt.Errorf("compile child: %w", err)
	}
	select {
	case slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-slots }()

	wall := 2 * lim.CPU
	cctx, cancel := context.WithTimeout(ctx, wall)
	defer cancel()
	exe, err := executable()
	if err != nil {
		return nil, fmt.Errorf("compile child: %w", err)
	}
	cmd := exec.CommandContext(cctx, exe)
	cmd.Args = []string{"brine-compile", strconv.FormatInt(lim.Memory, 10), lim.CPU.String()}
	cmd.Env = append(childEnv(), envChild+"=1", "GOMAXPROCS=1", "GOTRACEBACK=none")
	cmd.Stdin = bytes.NewReader(req)
	var stdout, stderr capped
	stdout.max, stderr.max = MaxOutput, 4096
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = time.Second
	start := time.Now()
	runErr := cmd.Run()
	if runErr != nil || stdout.over {
		switch {
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case cctx.Err() != nil:
			return nil, fmt.Errorf("%w: compiling took longer than %s", ErrBound, wall)
		case stdout.over:
			return nil, fmt.Errorf("%w: the compile's diagnostics are over %d bytes", ErrBound, MaxOutput)
		case outOfMemory(stderr.String()):
			return nil, fmt.Errorf("%w: compiling needed more than %s of memory", ErrBound, size(lim.Memory))
		case cpuKilled(cmd.ProcessState):
			return nil, fmt.Errorf("%w: compiling used more than %s of CPU", ErrBound, lim.CPU)
		}
		return nil, fmt.Errorf("compile child failed after %s: %v: %s", time.Since(start).Round(time.Millisecond), runErr, lastLine(stderr.String()))
	}
	var ans answer
	if err := json.Unmarshal(stdout.Bytes(), &ans); err != nil {
		return nil, fmt.Errorf("compile child: unreadable answer: %w", err)
	}
	if len(ans.Results) == 0 || len(ans.Results) > len(opts) {
		return nil, fmt.Errorf("compile child: %d results for %d compiles", len(ans.Results), len(opts))
	}
	return ans.Results, nil
}

// executable is the binary to re-execute: /proc/self/exe when it is there (a chroot or a
// replaced file on disk do not matter then), else os.Executable.
func executable() (string, error) {
	if _, err := os.Stat("/proc/self/exe"); err == nil {
		return "/proc/self/exe", nil
	}
	return os.Executable()
}

// childEnv is the parent's environment without anything that would change the child's
// runtime limits.
func childEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "GOMAXPROCS=") || strings.HasPrefix(kv, "GOMEMLIMIT=") || strings.HasPrefix(kv, "GOGC=") ||
			strings.HasPrefix(kv, "GOTRACEBACK=") || strings.HasPrefix(kv, envChild+"=") {
			continue
		}
		out = append(out, kv)
	}
	return out
}

func outOfMemory(stderr string) bool {
	return strings.Contains(stderr, "out of memory") || strings.Contains(stderr, "cannot allocate memory") ||
		strings.Contains(stderr, "failed to reserve") || strings.Contains(stderr, "memory limit")
}

func cpuKilled(ps *os.ProcessState) bool {
	if ps == nil {
		return false
	}
	ws, ok := ps.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && (ws.Signal() == syscall.SIGXCPU || ws.Signal() == syscall.SIGKILL)
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}

func size(n int64) string {
	if n%(1<<30) == 0 {
		return strconv.FormatInt(n>>30, 10) + " GiB"
	}
	return strconv.FormatInt(n>>20, 10) + " MiB"
}

// capped keeps the first max bytes written to it and notes that more came.
type capped struct {
	bytes.Buffer
	max  int
	over bool
}

func (c *capped) Write(p []byte) (int, error) {
	if room := c.max - c.Len(); len(p) > room {
		c.over = true
		if room > 0 {
			c.Buffer.Write(p[:room])
		}
		return len(p), nil
	}
	return c.Buffer.Write(p)
}

// The child: the same binary started by Compile. It runs before any main or TestMain, so that
// every program that can start a child (it links this package) is also one.
func init() {
	if os.Getenv(envChild) != "1" {
		return
	}
	os.Exit(child(os.Args, os.Stdin, os.Stdout))
}

func child(args []string, in io.Reader, out io.Writer) int {
	// The limits come first, from the arguments: nothing of the bundle is read before they hold.
	var memory int64
	var cpu time.Duration
	if len(args) == 3 {
		memory, _ = strconv.ParseInt(args[1], 10, 64)
		cpu, _ = time.ParseDuration(args[2])
	}
	if memory <= 0 || cpu <= 0 {
		fmt.Fprintln(os.Stderr, "compile child: usage: brine-compile MEMORY CPU (a request on stdin)")
		return 3
	}
	if err := limit(memory, cpu); err != nil {
		fmt.Fprintln(os.Stderr, "compile child:", err)
		return 3
	}
	raw, err := io.ReadAll(io.LimitReader(in, 2*(states.MaxBundleBytes+states.MaxBundleFiles*1024)+(16<<20)))
	if err != nil {
		fmt.Fprintln(os.Stderr, "compile child: read:", err)
		return 3
	}
	var req request
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber() // facts keep their numbers exactly as the parent had them
	if err := dec.Decode(&req); err != nil {
		fmt.Fprintln(os.Stderr, "compile child: request:", err)
		return 3
	}
	raw = nil
	b, err := states.UnmarshalBundle(req.Bundle)
	if err != nil {
		fmt.Fprintln(os.Stderr, "compile child:", err)
		return 3
	}
	b.Root = req.Root
	req.Bundle = nil
	var ans answer
	mod, diags := states.Load(b, builtin.Types())
	if diags.HasErrors() {
		r := Result{}
		for _, d := range diags {
			r.Diags = append(r.Diags, diag{Severity: d.Severity, Summary: d.Summary, Detail: d.Detail, Subject: d.Subject, Context: d.Context})
		}
		ans.Results = append(ans.Results, r)
		req.Options = nil
	}
	for _, o := range req.Options {
		g, diags := states.Compile(mod, o)
		r := Result{}
		if g != nil {
			r.Resources = g.Len()
		}
		for _, d := range diags {
			r.Diags = append(r.Diags, diag{Severity: d.Severity, Summary: d.Summary, Detail: d.Detail, Subject: d.Subject, Context: d.Context})
		}
		ans.Results = append(ans.Results, r)
		if req.UntilOK && !diags.HasErrors() {
			break
		}
	}
	if err := json.NewEncoder(out).Encode(ans); err != nil {
		return 3
	}
	return 0
}

// limit bounds this process: its data segment (RLIMIT_DATA: since Linux 4.7 every private
// writable mapping, which is all the Go runtime's heap and stacks; RLIMIT_AS would also count
// the address space the runtime reserves without using it), its CPU time (SIGKILL one second
// after the soft limit's SIGXCPU), its garbage collector's target, and its priority.
func limit(memory int64, cpu time.Duration) error {
	if err := unix.Setrlimit(unix.RLIMIT_DATA, &unix.Rlimit{Cur: uint64(memory), Max: uint64(memory)}); err != nil {
		return fmt.Errorf("RLIMIT_DATA: %w", err)
	}
	secs := uint64((cpu + time.Second - 1) / time.Second)
	if err := unix.Setrlimit(unix.RLIMIT_CPU, &unix.Rlimit{Cur: secs, Max: secs + 1}); err != nil {
		return fmt.Errorf("RLIMIT_CPU: %w", err)
	}
	if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{}); err != nil {
		return fmt.Errorf("RLIMIT_CORE: %w", err)
	}
	debug.SetMemoryLimit(memory * 3 / 4)
	_ = unix.Setpriority(unix.PRIO_PROCESS, 0, 10)
	return nil
}

// CompileChecked compiles b for opts in this process, once a child under lim has compiled it
// the same way without going over a limit: the graph it returns is the one that can be
// applied, and the child proved its cost bounded. A compile whose child went over a limit, or
// could not run, ends in an error diagnostic naming the bundle: nothing of it may be applied.
func CompileChecked(ctx context.Context, mod *states.Module, opts states.Options, lim Limits) (*states.Graph, hcl.Diagnostics) {
	b := mod.Bundle
	res, err := Compile(ctx, b.Marshal(), b.Root, []states.Options{opts}, false, lim)
	if err != nil {
		name := b.Root
		if name == "" {
			name = "the bundle"
		}
		return nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Bundle refused: over the compile bound",
			Detail: fmt.Sprintf("Compiling %s (digest %.12s): %v.", name, b.Digest(), err)}}
	}
	if d := res[0].Diagnostics(); d.HasErrors() {
		return nil, d
	}
	return states.Compile(mod, opts)
}
