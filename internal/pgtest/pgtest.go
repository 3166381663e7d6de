// Package pgtest runs a private PostgreSQL cluster for tests: initdb in a temporary directory,
// the server listening on a unix socket in that directory only (no TCP), run as an unprivileged
// user (the postgres system user when the tests run as root: PostgreSQL refuses root). One
// cluster serves a test binary (start it lazily with Shared, stop it from TestMain with Stop);
// every test gets a fresh database (NewDatabase).
package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/brinecm/brine/testbed"
)

// BinDir is where Debian's postgresql-15 package puts the server binaries.
var BinDir = "/usr/lib/postgresql/15/bin"

// Cluster is a running private PostgreSQL server.
type Cluster struct {
	dir  string // data directory and (unless Options.SocketDir) socket directory
	sock string // socket directory
	cmd  *exec.Cmd
	done chan struct{} // closed when the server exited
	cred *syscall.Credential

	mu sync.Mutex // guards n
	n  int        // databases made
}

var (
	sharedMu  sync.Mutex // guards shared, sharedErr
	shared    *Cluster
	sharedErr error
)

// Available reports why a cluster cannot be started here, or nil.
func Available() error {
	for _, b := range []string{"initdb", "postgres"} {
		if _, err := os.Stat(filepath.Join(BinDir, b)); err != nil {
			return fmt.Errorf("PostgreSQL server binaries not found in %s (Debian: apt-get install postgresql; scripts/deps.sh)", BinDir)
		}
	}
	if os.Geteuid() == 0 {
		if _, err := user.Lookup("postgres"); err != nil {
			return errors.New("running as root and there is no postgres user to run PostgreSQL as (apt-get install postgresql makes it)")
		}
	}
	return nil
}

// Shared returns the cluster of this test binary, starting it on first use; a test that cannot
// have one is skipped (failed when BRINE_REQUIRE_REAL is set). Call Stop from TestMain.
func Shared(t testing.TB) *Cluster {
	t.Helper()
	if err := Available(); err != nil {
		testbed.SkipUnavailable(t, err)
	}
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared == nil && sharedErr == nil {
		shared, sharedErr = Start()
	}
	if sharedErr != nil {
		t.Fatalf("start PostgreSQL: %v", sharedErr)
	}
	return shared
}

// Stop stops the shared cluster, if one was started, and removes its directory.
func Stop() {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared != nil {
		shared.Stop()
		shared = nil
	}
}

// Main is TestMain for a package that uses Shared: it runs the tests and stops the cluster.
func Main(m *testing.M) {
	code := m.Run()
	Stop()
	os.Exit(code)
}

// Options adjust a cluster.
type Options struct {
	// Durable keeps PostgreSQL's defaults (fsync, synchronous commit, full page writes), for
	// benchmarks that compare with stores that fsync; tests run without them.
	Durable bool
	// SocketDir, when set, is where the server makes its socket (an existing directory, made
	// writable for the server's user), for clients in other mount namespaces (testbed hosts
	// see the cluster's shared directory).
	SocketDir string
}

// Start initialises and starts a cluster for tests in a new temporary directory.
func Start() (*Cluster, error) { return StartWith(Options{}) }

// StartWith is Start with options.
func StartWith(o Options) (*Cluster, error) {
	dir, err := os.MkdirTemp("", "brpg")
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: dir, sock: dir, done: make(chan struct{})}
	if o.SocketDir != "" {
		c.sock = o.SocketDir
	}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		for _, d := range []string{dir, c.sock} {
			if err := os.Chown(d, uid, gid); err != nil {
				os.RemoveAll(dir)
				return nil, err
			}
		}
	}
	data := filepath.Join(dir, "data")
	var out bytes.Buffer
	initdb := exec.Command(filepath.Join(BinDir, "initdb"), "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions")
	initdb.Stdout, initdb.Stderr = &out, &out
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	initdb.Dir = dir
	if err := initdb.Run(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %v: %s", err, out.String())
	}
	logf, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if c.cred != nil {
		_ = logf.Chown(int(c.cred.Uid), int(c.cred.Gid))
	}
	// listen_addresses='' : no TCP at all; the socket lives in dir. fsync off: a test cluster
	// does not survive a crash of the machine anyway.
	args := []string{"-D", data, "-k", c.sock, "-c", "listen_addresses=", "-c", "max_connections=200"}
	if !o.Durable {
		args = append(args, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	}
	c.cmd = exec.Command(filepath.Join(BinDir, "postgres"), args...)
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	// Pdeathsig: a test binary that dies (a panic, a timeout) takes its server with it.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred, Pdeathsig: syscall.SIGQUIT, Setpgid: true}
	c.cmd.Dir = dir
	if err := c.cmd.Start(); err != nil {
		logf.Close()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	go func() { c.cmd.Wait(); logf.Close(); close(c.done) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		conn, err := pgx.Connect(ctx, c.URL("postgres"))
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return c, nil
		}
		select {
		case <-c.done:
			log, _ := os.ReadFile(filepath.Join(dir, "server.log"))
			os.RemoveAll(dir)
			return nil, fmt.Errorf("postgres exited: %s", log)
		default:
		}
		if time.Now().After(deadline) {
			c.Stop()
			return nil, fmt.Errorf("postgres did not accept connections within 60s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// URL returns the connection string of database db.
func (c *Cluster) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@/%s?host=%s&sslmode=disable", db, c.sock)
}

// NewDatabase creates a fresh database for t and returns its connection string; it is dropped
// when t ends.
func (c *Cluster) NewDatabase(t testing.TB) string {
	t.Helper()
	c.mu.Lock()
	c.n++
	name := fmt.Sprintf("t%d", c.n)
	c.mu.Unlock()
	c.exec(t, `CREATE DATABASE `+name)
	t.Cleanup(func() { c.exec(t, `DROP DATABASE IF EXISTS `+name+` WITH (FORCE)`) })
	return c.URL(name)
}

func (c *Cluster) exec(t testing.TB, sql string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		t.Errorf("postgres: %v", err)
		return
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Errorf("postgres: %s: %v", sql, err)
	}
}

// Restart stops the server (fast shutdown) and starts it again on the same data, for tests of
// a database that goes away under load.
func (c *Cluster) Restart() error {
	c.Down()
	return c.Up()
}

// Down stops the server (fast shutdown), keeping its data, until Up.
func (c *Cluster) Down() {
	c.signal(syscall.SIGINT)
	<-c.done
}

// Up starts the server again after Down.
func (c *Cluster) Up() error {
	old := c.cmd
	c.cmd = exec.Command(old.Path, old.Args[1:]...)
	c.cmd.SysProcAttr, c.cmd.Dir = old.SysProcAttr, old.Dir
	logf, err := os.OpenFile(filepath.Join(c.dir, "server.log"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	c.done = make(chan struct{})
	if err := c.cmd.Start(); err != nil {
		logf.Close()
		close(c.done)
		return err
	}
	done := c.done
	go func() { c.cmd.Wait(); logf.Close(); close(done) }()
	return nil
}

func (c *Cluster) signal(sig syscall.Signal) {
	if c.cmd != nil && c.cmd.Process != nil {
		_ = c.cmd.Process.Signal(sig)
	}
}

// Stop shuts the server down (fast, then immediate after 30s) and removes its directory.
func (c *Cluster) Stop() {
	c.signal(syscall.SIGINT)
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		c.signal(syscall.SIGQUIT)
		select {
		case <-c.done:
		case <-time.After(10 * time.Second):
			c.signal(syscall.SIGKILL)
			<-c.done
		}
	}
	os.RemoveAll(c.dir)
}
