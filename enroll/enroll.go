package enroll

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/crypto/ssh"
	"golang.org/x/sync/errgroup"

	"github.com/brinecm/brine/cloud"
	"github.com/brinecm/brine/pki"
)

// Master is what enrolling needs from the brine master, over its control socket.
type Master interface {
	// CreateToken makes a single-use enrolment token for minionID alone (as for cloud create).
	CreateToken(ctx context.Context, minionID string, groups []string, ttl time.Duration) (string, error)
	// Bootstrap gives the master's address, ports and fingerprint for minion.hcl.
	Bootstrap(ctx context.Context) (cloud.BootstrapInfo, error)
	// WaitEnrolled blocks until minionID has enrolled and reported facts, or ctx ends.
	WaitEnrolled(ctx context.Context, minionID string) error
	// KeyState is the state of minionID's key on the master ("" when it has none).
	KeyState(ctx context.Context, minionID string) (string, error)
}

// DefaultParallel is how many hosts Options.Parallel enrols at once by default: 8 per CPU of
// this machine, between 16 and 64. A host's time is mostly waiting for its shell, its disk and
// its systemd; this machine's part (the SSH encryption; the binary is packed once) is small: on
// 2 CPUs, 20 hosts at once took 12.8 s where 10 at a time took 16.4 s (BENCHMARKS.md).
var DefaultParallel = min(64, max(16, 8*runtime.NumCPU()))

// Defaults of Options.
const (
	DefaultConnectTimeout = 15 * time.Second
	DefaultCommandTimeout = 2 * time.Minute
	DefaultEnrollTimeout  = 2 * time.Minute
	DefaultTokenTTL       = 15 * time.Minute
)

// maxOutput bounds what is kept of a remote command's output.
const maxOutput = 16 << 10

// Options of Enroll.
type Options struct {
	Master Master
	// Binary is the minion binary to install as /usr/bin/brine-minion (a static linux binary:
	// brine-minion, or the full brine binary, which runs as the minion under that name).
	Binary string
	// Groups are the groups the token grants.
	Groups   []string
	HostKeys HostKeys
	// Auth are the SSH authentication methods, tried in order (a key file, ssh-agent).
	Auth []ssh.AuthMethod
	// Parallel bounds how many hosts are enrolled at once.
	Parallel int
	// ConnectTimeout bounds the TCP connect and the SSH handshake with one host.
	ConnectTimeout time.Duration
	// CommandTimeout bounds the script run on a host (inspect, upload, configure).
	CommandTimeout time.Duration
	// EnrollTimeout bounds the wait for the master to report the minion enrolled.
	EnrollTimeout time.Duration
	// TokenTTL is how long each token is valid.
	TokenTTL time.Duration
}

// Stages of one host's enrolment, in order; a Result names the one that failed.
const (
	StageConnect   = "connect"   // TCP, SSH handshake, host key, authentication
	StageInspect   = "inspect"   // host name, architecture, systemd
	StageToken     = "token"     // the master's key state and a fresh token
	StageUpload    = "upload"    // the binary, its sha256 checked on the host
	StageConfigure = "configure" // minion.hcl, the unit, start
	StageEnrolled  = "enrolled"  // the master reports the minion enrolled
)

// Result is the outcome for one target.
type Result struct {
	Target string `json:"target"`
	// ID is the minion id, once known.
	ID string `json:"id,omitempty"`
	OK bool   `json:"ok"`
	// Stage is the stage that failed, or StageEnrolled when OK.
	Stage string `json:"stage"`
	// Uploaded is false when the host already had this binary.
	Uploaded bool          `json:"uploaded"`
	Error    string        `json:"error,omitempty"`
	Duration time.Duration `json:"duration_ns"`
	// Stages is how long each stage reached took.
	Stages map[string]time.Duration `json:"stages_ns,omitempty"`
}

// binary is the brine binary read once for every host.
type binary struct {
	data []byte
	sum  string // hex sha256
	arch string // uname -m it runs on
}

func readBinary(path string) (binary, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return binary{}, fmt.Errorf("brine binary: %w", err)
	}
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return binary{}, fmt.Errorf("brine binary %s is not an ELF executable: %w", path, err)
	}
	arch := map[elf.Machine]string{elf.EM_X86_64: "x86_64", elf.EM_AARCH64: "aarch64", elf.EM_386: "i686", elf.EM_ARM: "armv7l"}[f.Machine]
	if arch == "" {
		return binary{}, fmt.Errorf("brine binary %s: unsupported machine %v", path, f.Machine)
	}
	sum := sha256.Sum256(data)
	return binary{data: data, sum: hex.EncodeToString(sum[:]), arch: arch}, nil
}

// Enroll enrols every target, at most opts.Parallel at once, and returns one Result per
// target in the order given; each is also passed to done (when not nil) as soon as it is
// known, from one goroutine at a time. An error means nothing was tried (bad options, no
// master, unreadable binary); failures of single hosts are in their Results.
func Enroll(ctx context.Context, targets []Target, opts Options, done func(Result)) ([]Result, error) {
	if opts.Master == nil {
		return nil, errors.New("enroll: no master")
	}
	if err := opts.HostKeys.check(); err != nil {
		return nil, err
	}
	if len(opts.Auth) == 0 {
		return nil, errors.New("no SSH authentication: give --identity FILE or run an ssh-agent (SSH_AUTH_SOCK)")
	}
	if opts.Parallel <= 0 {
		opts.Parallel = DefaultParallel
	}
	orDefault := func(d *time.Duration, def time.Duration) {
		if *d <= 0 {
			*d = def
		}
	}
	orDefault(&opts.ConnectTimeout, DefaultConnectTimeout)
	orDefault(&opts.CommandTimeout, DefaultCommandTimeout)
	orDefault(&opts.EnrollTimeout, DefaultEnrollTimeout)
	orDefault(&opts.TokenTTL, DefaultTokenTTL)
	seen := map[string]string{}
	for _, t := range targets {
		if prev, dup := seen[t.Addr()]; dup {
			return nil, fmt.Errorf("%s and %s are the same server", prev, t.URL)
		}
		seen[t.Addr()] = t.URL
	}
	bin, err := readBinary(opts.Binary)
	if err != nil {
		return nil, err
	}
	info, err := opts.Master.Bootstrap(ctx)
	if err != nil {
		return nil, fmt.Errorf("master: %w", err)
	}
	e := &enroller{opts: opts, bin: bin, info: info, ids: map[string]string{}, script: installScript(bin.sum),
		zstd: sync.OnceValues(func() ([]byte, error) { return packZstd(bin.data) }),
		gzip: sync.OnceValues(func() ([]byte, error) { return packGzip(bin.data) })}
	// Hosts that lack the binary mostly have zstd: pack it while the first ones connect.
	packing := make(chan struct{})
	go func() {
		defer close(packing)
		_, _ = e.zstd()
	}()
	defer func() { <-packing }()
	results := make([]Result, len(targets))
	var mu sync.Mutex // serialises done
	g := new(errgroup.Group)
	g.SetLimit(opts.Parallel)
	for i, t := range targets {
		g.Go(func() error {
			start := time.Now()
			r := e.one(ctx, t)
			r.Target, r.Duration = t.URL, time.Since(start)
			results[i] = r
			if done != nil {
				mu.Lock()
				done(r)
				mu.Unlock()
			}
			return nil
		})
	}
	_ = g.Wait()
	return results, nil
}

type enroller struct {
	opts   Options
	bin    binary
	info   cloud.BootstrapInfo
	script string // installScript of bin
	// zstd and gzip are bin packed for the hosts, once.
	zstd, gzip func() ([]byte, error)

	mu  sync.Mutex        // guards ids
	ids map[string]string // minion id -> target URL claiming it in this run
}

// claim reserves id for target: two servers of one run cannot enrol as one minion.
func (e *enroller) claim(id, target string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if prev, ok := e.ids[id]; ok {
		return fmt.Errorf("minion id %s is also %s's: give one of them ?id=OTHER", id, prev)
	}
	e.ids[id] = target
	return nil
}

func (e *enroller) one(ctx context.Context, t Target) (r Result) {
	r.Stages = map[string]time.Duration{}
	last := time.Now()
	lap := func(stage string) {
		now := time.Now()
		r.Stages[stage] += now.Sub(last)
		last = now
	}
	fail := func(stage string, err error) Result {
		lap(stage)
		r.Stage, r.Error = stage, err.Error()
		return r
	}
	c, err := e.dial(ctx, t)
	if err != nil {
		return fail(StageConnect, err)
	}
	lap(StageConnect)
	defer c.Close()

	// One session, one script: it prints what the host is, then waits for the verdict on its
	// stdin. Nothing is written before the host key was verified (dial), the host can run the
	// binary and the unit, and the master made a token.
	rs, err := e.start(ctx, c, e.script)
	if err != nil {
		return fail(StageInspect, err)
	}
	defer rs.close()
	lines, err := rs.inspect(inspectLines)
	if err != nil {
		return fail(StageInspect, err)
	}
	hostname, arch, init, installed, format := lines[0], lines[1], lines[2], lines[3], lines[4]
	r.ID = t.ID
	if r.ID == "" {
		r.ID = hostname
		if !pki.ValidID(r.ID) {
			return fail(StageInspect, fmt.Errorf("the host name %q is not a valid minion id (^[a-z0-9][a-z0-9.-]{0,62}$): give one with %s?id=NAME", hostname, t.URL))
		}
	}
	if arch != e.bin.arch {
		return fail(StageInspect, fmt.Errorf("the host is %s and the binary is for %s", arch, e.bin.arch))
	}
	if init != "systemd" {
		return fail(StageInspect, errors.New("the host does not run systemd: enroll installs the brine-minion unit; install brine by hand there (docs/master.md)"))
	}
	if format != formatZstd && format != formatGzip {
		return fail(StageInspect, fmt.Errorf("unexpected answer from the host: decompressor %q", format[:min(len(format), 64)]))
	}
	if err := e.claim(r.ID, t.URL); err != nil {
		return fail(StageInspect, err)
	}
	lap(StageInspect)

	// Token: a key the master already accepted (or rejected) for this id is not replaced by
	// a token, so the wait below would report the other key: refuse instead.
	state, err := e.opts.Master.KeyState(ctx, r.ID)
	if err != nil {
		return fail(StageToken, fmt.Errorf("master: %w", err))
	}
	if state != "" && state != "pending" {
		return fail(StageToken, fmt.Errorf("the master already has a key for %s (%s): `brine key delete %s` first to enrol this host as %s, or give it another id (?id=NAME)", r.ID, state, r.ID, r.ID))
	}
	tok, err := e.opts.Master.CreateToken(ctx, r.ID, e.opts.Groups, e.opts.TokenTTL)
	if err != nil {
		return fail(StageToken, fmt.Errorf("master: %w", err))
	}
	conf, err := cloud.MinionConfig(cloud.UserDataParams{Bootstrap: e.info, MinionID: r.ID, Groups: e.opts.Groups, Token: tok})
	if err != nil {
		return fail(StageToken, err)
	}
	var packed []byte
	if installed != e.bin.sum {
		if packed, err = e.packed(format); err != nil {
			return fail(StageToken, err)
		}
	} else {
		format = formatKeep
	}
	lap(StageToken)

	// The verdict, then minion.hcl, then the compressed binary, all on the session's stdin:
	// the token never is on a command line (ps would show it). The host checks the sha256 of
	// the decompressed binary before it installs it or minion.hcl.
	uploaded, err := rs.finish(fmt.Sprintf("install %d %s\n", len(conf), format), []byte(conf), packed)
	if packed != nil {
		if uploaded.IsZero() {
			if err == nil {
				err = errors.New("the host did not report the binary installed")
			}
			return fail(StageUpload, err)
		}
		r.Stages[StageUpload] += uploaded.Sub(last)
		last, r.Uploaded = uploaded, true
	} else {
		lap(StageUpload)
	}
	if err != nil {
		return fail(StageConfigure, err)
	}
	lap(StageConfigure)
	wctx, cancel := context.WithTimeout(ctx, e.opts.EnrollTimeout)
	defer cancel()
	if err := e.opts.Master.WaitEnrolled(wctx, r.ID); err != nil {
		if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
			status, _ := e.run(ctx, c, "systemctl is-active brine-minion.service", nil)
			err = fmt.Errorf("not enrolled after %s (brine-minion is %s; see journalctl -u brine-minion on the host)", e.opts.EnrollTimeout, strings.TrimSpace(status))
		}
		return fail(StageEnrolled, err)
	}
	lap(StageEnrolled)
	r.OK, r.Stage = true, StageEnrolled
	return r
}

// dial connects and authenticates, verifying the host key; both are bounded by
// ConnectTimeout and by ctx.
func (e *enroller) dial(ctx context.Context, t Target) (*ssh.Client, error) {
	v, err := e.opts.HostKeys.verifier(t.Addr())
	if err != nil {
		return nil, err
	}
	cfg := &ssh.ClientConfig{User: t.User, Auth: e.opts.Auth, HostKeyCallback: v.callback,
		HostKeyAlgorithms: v.algos, Timeout: e.opts.ConnectTimeout}
	dctx, cancel := context.WithTimeout(ctx, e.opts.ConnectTimeout)
	defer cancel()
	conn, err := (&net.Dialer{}).DialContext(dctx, "tcp", t.Addr())
	if err != nil {
		return nil, err
	}
	// The handshake is bounded too: a server that accepts and says nothing cannot hold us.
	stop := context.AfterFunc(dctx, func() { conn.Close() })
	cc, chans, reqs, err := ssh.NewClientConn(conn, t.Addr(), cfg)
	if !stop() {
		if err == nil {
			cc.Close()
		}
		return nil, fmt.Errorf("ssh handshake with %s: no answer within %s", t.Addr(), e.opts.ConnectTimeout)
	}
	if err != nil {
		conn.Close()
		if errors.Is(err, ErrHostKey) {
			return nil, unwrapHostKey(err)
		}
		return nil, fmt.Errorf("ssh %s: %w", t.Addr(), err)
	}
	return ssh.NewClient(cc, chans, reqs), nil
}

// unwrapHostKey drops the ssh package's "ssh: handshake failed: " in front of our message.
func unwrapHostKey(err error) error {
	s := err.Error()
	if i := strings.Index(s, ErrHostKey.Error()); i > 0 {
		return errors.New(s[i:])
	}
	return err
}

// run runs script on the host with stdin, bounded by CommandTimeout: past it the connection is
// closed, which ends the command. It returns stdout; a failure carries (bounded) stderr.
func (e *enroller) run(ctx context.Context, c *ssh.Client, script string, stdin io.Reader) (string, error) {
	s, err := c.NewSession()
	if err != nil {
		return "", err
	}
	defer s.Close()
	var stdout, stderr boundedBuffer
	s.Stdin, s.Stdout, s.Stderr = stdin, &stdout, &stderr
	cctx, cancel := context.WithTimeout(ctx, e.opts.CommandTimeout)
	defer cancel()
	stop := context.AfterFunc(cctx, func() { c.Close() })
	err = s.Run(script)
	if !stop() {
		return "", fmt.Errorf("no answer within %s: connection closed", e.opts.CommandTimeout)
	}
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			return "", err
		}
		return "", fmt.Errorf("%v: %s", err, msg)
	}
	return stdout.String(), nil
}

// boundedBuffer keeps the first maxOutput bytes written to it and drops the rest.
type boundedBuffer struct{ b bytes.Buffer }

func (w *boundedBuffer) Write(p []byte) (int, error) {
	if room := maxOutput - w.b.Len(); room > 0 {
		w.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (w *boundedBuffer) String() string { return w.b.String() }

// Compressions of the binary on its way to a host: zstd where the host has it (it unpacks 36 MB
// in a fraction of gzip's time), else gzip, which every Debian host has; keep sends none, the
// host has this binary already.
const (
	formatZstd = "zstd"
	formatGzip = "gzip"
	formatKeep = "keep"
)

// inspectLines is how many lines the script prints before it waits for the verdict.
const inspectLines = 5

// installedMarker is the line the script prints once the binary is in place.
const installedMarker = "binary installed"

// installScript is the one script enroll runs on a host (sum is the binary's hex sha256). It
// prints the host name, the machine, "systemd" or "none", the sha256 of /usr/bin/brine-minion
// ("-" when there is none) and the decompressor it has, then reads the verdict from stdin: anything
// but "install LEN FORMAT" ends it with nothing written. With it, minion.hcl (LEN bytes) and
// the binary compressed with FORMAT (or nothing for keep) follow on stdin; both go to
// temporary files, the binary's sha256 is checked, and only then are they moved in place, the
// unit installed (the daemon reloaded only when it had loaded another version) and the minion
// (re)started.
func installScript(sum string) string {
	return `set -eu
umask 077
# OpenSSL's sha256 uses the CPU's SHA instructions: 3 times coreutils' on 36 MB.
sha256() {
  if command -v openssl >/dev/null 2>&1; then openssl dgst -sha256 -r "$1"; else sha256sum "$1"; fi | cut -d' ' -f1
}
hostname
uname -m
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then echo systemd; else echo none; fi
if [ -f /usr/bin/brine-minion ]; then sha256 /usr/bin/brine-minion; else echo -; fi
if command -v zstd >/dev/null 2>&1; then echo ` + formatZstd + `; else echo ` + formatGzip + `; fi
read -r verb len format || exit 0
[ "$verb" = install ] || exit 0
case "$len" in ''|*[!0-9]*) echo "bad minion.hcl length $len" >&2; exit 1 ;; esac
mkdir -p /etc/brine /var/lib/brine
conf=$(mktemp /etc/brine/.minion.hcl.XXXXXX)
bin=
trap 'rm -f "$conf" ${bin:+"$bin"}' EXIT
head -c "$len" > "$conf"
if [ "$(wc -c < "$conf")" -ne "$len" ]; then echo "minion.hcl cut short" >&2; exit 1; fi
case "$format" in
` + formatKeep + `) ;;
` + formatZstd + `|` + formatGzip + `)
  bin=$(mktemp /usr/bin/.brine-minion.XXXXXX)
  if [ "$format" = ` + formatZstd + ` ]; then zstd -dcq > "$bin"; else gzip -dc > "$bin"; fi
  got=$(sha256 "$bin")
  if [ "$got" != '` + sum + `' ]; then
    echo "sha256 mismatch on the host: got $got, want ` + sum + `; nothing installed" >&2
    exit 1
  fi
  chmod 0755 "$bin"
  mv -f "$bin" /usr/bin/brine-minion
  bin=
  echo '` + installedMarker + `' ;;
*) echo "unknown format $format" >&2; exit 1 ;;
esac
mv -f "$conf" /etc/brine/minion.hcl
conf=
umask 022
unit=/etc/systemd/system/brine-minion.service
cat > /etc/systemd/system/.brine-minion.service.new <<'BRINE_UNIT_EOF'
` + cloud.MinionUnit + `BRINE_UNIT_EOF
if cmp -s /etc/systemd/system/.brine-minion.service.new "$unit"; then
  rm -f /etc/systemd/system/.brine-minion.service.new
else
  mv -f /etc/systemd/system/.brine-minion.service.new "$unit"
fi
# systemd loads a unit it has not seen from disk; one it loaded before, whose file changed since,
# needs the reload.
if [ "$(systemctl show -p NeedDaemonReload --value brine-minion.service)" != no ]; then systemctl daemon-reload; fi
systemctl enable --no-reload brine-minion.service >/dev/null 2>&1
systemctl restart brine-minion.service
`
}

// packed is the binary compressed as format, made once for all hosts.
func (e *enroller) packed(format string) ([]byte, error) {
	switch format {
	case formatZstd:
		return e.zstd()
	case formatGzip:
		return e.gzip()
	}
	return nil, fmt.Errorf("no compression %q", format)
}

func packZstd(data []byte) ([]byte, error) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		return nil, err
	}
	defer enc.Close()
	return enc.EncodeAll(data, make([]byte, 0, len(data)/2)), nil
}

func packGzip(data []byte) ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(len(data) / 2)
	w, err := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(data); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// remoteScript is the running install script of one host: its stdin, its stdout (read by
// inspect, then drained by a goroutine that finish waits for) and its bounded stderr.
type remoteScript struct {
	s      *ssh.Session
	stdin  io.WriteCloser
	stdout io.Reader
	stderr *boundedBuffer
	done   chan error // the session's exit, once
	stop   func() bool
	cmdTO  time.Duration
}

// start runs script in a new session of c. Past CommandTimeout (from now) or when ctx ends the
// connection is closed, which ends the script.
func (e *enroller) start(ctx context.Context, c *ssh.Client, script string) (*remoteScript, error) {
	s, err := c.NewSession()
	if err != nil {
		return nil, err
	}
	stdin, err := s.StdinPipe()
	if err != nil {
		s.Close()
		return nil, err
	}
	stdout, err := s.StdoutPipe()
	if err != nil {
		s.Close()
		return nil, err
	}
	rs := &remoteScript{s: s, stdin: stdin, stdout: stdout, stderr: &boundedBuffer{}, done: make(chan error, 1), cmdTO: e.opts.CommandTimeout}
	s.Stderr = rs.stderr
	cctx, cancel := context.WithTimeout(ctx, e.opts.CommandTimeout)
	stop := context.AfterFunc(cctx, func() { c.Close() })
	rs.stop = func() bool { defer cancel(); return stop() }
	if err := s.Start(script); err != nil {
		rs.stop()
		s.Close()
		return nil, err
	}
	return rs, nil
}

// inspect reads the n lines the script prints first; it keeps at most maxOutput bytes.
func (rs *remoteScript) inspect(n int) ([]string, error) {
	var got []byte
	buf := make([]byte, 4096)
	for bytes.Count(got, []byte("\n")) < n && len(got) < maxOutput {
		k, err := rs.stdout.Read(buf[:min(len(buf), maxOutput-len(got))])
		got = append(got, buf[:k]...)
		if err != nil {
			break
		}
	}
	lines := strings.Split(string(got), "\n")
	if len(lines) != n+1 || lines[n] != "" {
		if msg := strings.TrimSpace(rs.stderr.String()); msg != "" && len(got) < maxOutput {
			return nil, fmt.Errorf("the host's answer is cut short: %s", msg)
		}
		return nil, fmt.Errorf("unexpected answer from the host (%d bytes): %q", len(got), got[:min(len(got), 256)])
	}
	return lines[:n], nil
}

// finish writes the verdict and the payloads to the script's stdin, closes it and waits for the
// script to end. It returns when the script said the binary was installed (zero if it did not)
// and the script's failure with its (bounded) stderr.
func (rs *remoteScript) finish(verdict string, payloads ...[]byte) (time.Time, error) {
	installed := make(chan time.Time, 1)
	drained := make(chan struct{})
	go func() { // the rest of stdout, bounded, watched for the marker
		defer close(drained)
		var seen []byte
		sent := false
		buf := make([]byte, 4096)
		for {
			k, err := rs.stdout.Read(buf)
			if !sent && len(seen) < maxOutput {
				seen = append(seen, buf[:min(k, maxOutput-len(seen))]...)
				if bytes.Contains(seen, []byte(installedMarker+"\n")) {
					installed <- time.Now()
					sent = true
				}
			}
			if err != nil {
				return
			}
		}
	}()
	var werr error
	if _, err := io.WriteString(rs.stdin, verdict); err != nil {
		werr = err
	}
	for _, p := range payloads {
		if werr == nil && len(p) > 0 {
			_, werr = rs.stdin.Write(p)
		}
	}
	rs.stdin.Close()
	err := rs.s.Wait()
	<-drained
	var at time.Time
	select {
	case at = <-installed:
	default:
	}
	if !rs.stop() {
		return at, fmt.Errorf("no answer within %s: connection closed", rs.cmdTO)
	}
	if err == nil {
		return at, nil
	}
	if msg := strings.TrimSpace(rs.stderr.String()); msg != "" {
		return at, fmt.Errorf("%v: %s", err, msg)
	}
	if werr != nil {
		return at, fmt.Errorf("%v (writing to the host: %v)", err, werr)
	}
	return at, err
}

// close ends the session; the script, still waiting for its verdict, reads none and exits
// having written nothing.
func (rs *remoteScript) close() {
	rs.stop()
	rs.s.Close()
}
