// Package demo runs brine's reference deployment (examples/ghost-pro) end to end on one machine:
// a master, four testbed hosts (one per role) each running a real `brine-minion` that enrols with
// a token, one `apply` that converges them (packages, a tinc mesh, ufw, services), proof that the
// mesh and the firewall work, and a second apply that changes nothing. `make demo` and its test
// both run it.
//
// With Options.Real (`brine demo --real`) it runs examples/ghost-pro-real instead, on systemd
// hosts whose minions run from the shipped unit, with real packages from the machine's Debian
// mirror: nginx on cache, MariaDB on db, a Python web application on app; it proves that an HTTP
// request to cache's public address is proxied over the mesh to the app, which reads a row from
// MariaDB over the mesh, and that the database is refused from outside the mesh.
package demo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/brinecm/brine/cloud"
	"github.com/brinecm/brine/internal/minionbin"
	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/master"
	"github.com/brinecm/brine/pki"
	"github.com/brinecm/brine/states"
	"github.com/brinecm/brine/states/resources/builtin"
	"github.com/brinecm/brine/testbed"
)

// Roles are the hosts of the demo, one per group of the reference deployment.
var Roles = []string{"core", "cache", "app", "db"}

// Options say where things are.
type Options struct {
	Binary string // the brine binary; the hosts run brine-minion beside it, else it (default: this executable)
	Bundle string // the reference deployment (default examples/ghost-pro, or examples/ghost-pro-real)
	// Real runs the real-package variant: systemd hosts, packages from the machine's Debian
	// mirror (downloaded once, then cached on the machine), the minions under systemd.
	Real bool
	Keep bool   // leave the hosts running for inspection (brine testbed down NAME removes them)
	Name string // the testbed cluster's name (default demo<pid>)
	Out  io.Writer
}

// Run runs the demo and tears everything down, also on failure. The error says which step failed.
func Run(ctx context.Context, opts Options) (err error) {
	avail := testbed.Available
	if opts.Real {
		avail = testbed.SystemdAvailable
	}
	if err := avail(); err != nil {
		return fmt.Errorf("the demo builds a real cluster on this machine and needs it: %w", err)
	}
	if opts.Real {
		if err := testbed.DebianReachable(ctx, 10*time.Second); err != nil {
			return fmt.Errorf("brine demo --real installs packages from the machine's Debian mirror: %w", err)
		}
	}
	if opts.Binary == "" {
		if opts.Binary, err = os.Executable(); err != nil {
			return err
		}
	}
	if opts.Bundle == "" {
		opts.Bundle = "examples/ghost-pro"
		if opts.Real {
			opts.Bundle = "examples/ghost-pro-real"
		}
	}
	w := opts.Out
	start := time.Now()
	step := func(format string, args ...any) {
		fmt.Fprintf(w, "[%5.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}
	var timings []string
	mark := time.Now()
	lap := func(what string) {
		timings = append(timings, fmt.Sprintf("  %-38s %6.2fs", what, time.Since(mark).Seconds()))
		mark = time.Now()
	}

	bundle, err := states.ReadBundle(opts.Bundle)
	if err != nil {
		return err
	}
	bundle.Root = opts.Bundle
	mod, diags := states.Load(bundle, builtin.Types())
	if !diags.HasErrors() {
		diags = states.Check(mod, states.Options{})
	}
	if diags.HasErrors() {
		var sb strings.Builder
		states.WriteDiagnostics(&sb, bundle, diags, false)
		return fmt.Errorf("the bundle is invalid:\n%s", sb.String())
	}

	name := opts.Name
	if name == "" {
		name = fmt.Sprintf("demo%d", os.Getpid()%100000)
	}
	tbOpts := testbed.Options{Name: name, Hosts: Roles, Persistent: opts.Keep}
	if opts.Real {
		step("starting 4 systemd testbed hosts (%s) with the machine's Debian mirror", strings.Join(Roles, ", "))
		tbOpts.Systemd, tbOpts.Debian = true, true
	} else {
		step("starting 4 testbed hosts (%s) with the test apt repository", strings.Join(Roles, ", "))
		if tbOpts.AptRepo, err = testbed.DefaultAptRepo(); err != nil {
			return err
		}
	}
	c, err := testbed.New(ctx, tbOpts)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			for _, h := range c.Hosts() {
				for _, d := range h.Daemons() {
					fmt.Fprintf(w, "--- %s %s log:\n%s\n", h.Name(), d.Name(), tail(d.Log(), 3000))
				}
				if opts.Real && h.Alive() {
					lctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					out, _, _ := h.Sh(lctx, "journalctl --no-pager -n 40 -u brine-minion; systemctl --no-pager --failed")
					cancel()
					fmt.Fprintf(w, "--- %s brine-minion.service journal:\n%s\n", h.Name(), tail(out, 3000))
				}
			}
		}
		if opts.Keep {
			step("cluster %s left running: brine testbed exec --name %s HOST -- CMD; brine testbed down %s", name, name, name)
			return
		}
		c.Close()
		step("cluster removed")
	}()
	lap("4 hosts up")

	step("starting the master on %s", c.BridgeAddr())
	dataDir, err := os.MkdirTemp("", "brine-demo-master-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dataDir)
	if opts.Real {
		// The database password: a secret of the master, sealed to each minion's key. Every host
		// of the one apply receives it: the master checks the bundle's secret() calls, not which
		// of them a host's only_if skips.
		pw := make([]byte, 16)
		if _, err := rand.Read(pw); err != nil {
			return err
		}
		sec := fmt.Sprintf("secret \"db_password\" {\n  value = %q\n}\n", hex.EncodeToString(pw))
		if err := os.WriteFile(filepath.Join(dataDir, "secrets.hcl"), []byte(sec), 0o600); err != nil {
			return err
		}
	}
	m, err := master.New(master.Config{DataDir: dataDir, PublishAddr: c.BridgeAddr() + ":0", RequestAddr: c.BridgeAddr() + ":0",
		Heartbeat: "1s", ControlSocket: filepath.Join(dataDir, "master.sock")}, nil)
	if err != nil {
		return err
	}
	if err := m.Start(ctx); err != nil {
		return err
	}
	defer m.Close()
	_, pub, _ := net.SplitHostPort(m.PublishAddr())
	_, req, _ := net.SplitHostPort(m.RequestAddr())

	// The hosts run brine-minion, as a host with the package does: the one beside the binary
	// given (bin/ after make build), else that binary under the minion's name.
	bin := filepath.Join(c.SharedDir(), minionbin.Name)
	if err := copyFile(minionbin.Beside(opts.Binary), bin); err != nil {
		return err
	}
	if opts.Real {
		step("starting a minion in every host from the brine-minion unit; each enrols with a single-use token for its group")
	} else {
		step("starting a minion in every host; each enrols with a single-use token for its group")
	}
	for _, role := range Roles {
		tok, _, err := m.Tokens().Create(pki.TokenRequest{ID: role, Groups: []string{role}, TTL: 10 * time.Minute})
		if err != nil {
			return err
		}
		cfg := fmt.Sprintf("master = %q\npublish_port = %s\nrequest_port = %s\nid = %q\nmaster_finger = %q\ntoken = %q\nheartbeat = \"1s\"\nmax_backoff = \"1s\"\n",
			c.BridgeAddr(), pub, req, role, m.Key().Fingerprint(), tok)
		if opts.Real {
			if err := startUnitMinion(ctx, c.Host(role), bin, cfg); err != nil {
				return err
			}
			continue
		}
		if err := os.WriteFile(filepath.Join(c.SharedDir(), role+".hcl"), []byte(cfg), 0o600); err != nil {
			return err
		}
		if _, err := c.Host(role).Start("minion", testbed.HostSharedDir+"/"+minionbin.Name, "-c", testbed.HostSharedDir+"/"+role+".hcl", "--data-dir", "/var/lib/brine/minion"); err != nil {
			return err
		}
	}
	if err := poll(ctx, 30*time.Second, func() bool {
		for _, role := range Roles {
			k, ok := m.Keys().Get(role)
			if !ok || k.State != pki.StateAccepted || m.Facts(role) == nil {
				return false
			}
		}
		return true
	}); err != nil {
		return errors.New("the minions did not all enrol within 30s")
	}
	lap("4 minions enrolled")
	for _, role := range Roles {
		k, _ := m.Keys().Get(role)
		step("  %-5s accepted, groups %v, key %s", role, k.Groups, k.Finger())
	}

	applyTimeout := 3 * time.Minute
	if opts.Real {
		applyTimeout = 20 * time.Minute // nginx, MariaDB and their dependencies from the mirror
	}
	apply := func(what string) (map[string]map[states.Status]int, error) {
		step("brine apply '*' %s%s", opts.Bundle, what)
		res, err := m.Run(ctx, master.JobSpec{Kind: wire.JobApply, Target: "*", Minions: Roles, Bundle: bundle, Timeout: applyTimeout},
			func(ev master.Event) {
				switch ev.Event {
				case "published":
					if ev.Phase > 1 {
						step("  phase %d: the hosts' facts changed (tinc keys), applying again so the mesh closes", ev.Phase)
					}
				case "invalid":
					fmt.Fprint(w, ev.Diagnostics)
				}
			})
		if err != nil {
			return nil, err
		}
		counts := map[string]map[states.Status]int{}
		var failed []string
		for _, role := range Roles {
			r, ok := res.Returns[role]
			if !ok {
				failed = append(failed, role+": no return")
				continue
			}
			var rep states.Report
			if r.Error != "" || json.Unmarshal(r.Report, &rep) != nil {
				failed = append(failed, fmt.Sprintf("%s: %s %s", role, r.Error, r.Diagnostics))
				continue
			}
			counts[role] = rep.Counts()
			c := rep.Counts()
			step("  %-5s %2d ok, %2d changed, %d failed, %2d skipped (other roles) in %s", role,
				c[states.StatusOK], c[states.StatusChanged], c[states.StatusFailed], c[states.StatusSkipped], rep.Duration.Round(time.Millisecond))
			for _, x := range rep.Results {
				if x.Status == states.StatusFailed {
					failed = append(failed, fmt.Sprintf("%s: %s: %s", role, x.Address, x.Error))
				}
			}
		}
		if len(failed) > 0 {
			return counts, fmt.Errorf("apply failed:\n  %s", strings.Join(failed, "\n  "))
		}
		return counts, nil
	}
	if _, err := apply(""); err != nil {
		return err
	}
	lap("first apply (converge from scratch)")
	if opts.Real {
		cached, fetched := c.MirrorStats()
		step("  packages: %d fetched from the Debian mirror, %d from the machine's cache", fetched, cached)
	}

	// The mesh: every host pings every other over its mesh address.
	mesh := map[string]string{}
	for _, role := range Roles {
		addr := c.Host(role).Addr()
		mesh[role] = "10.8.0." + addr[strings.LastIndex(addr, ".")+1:]
	}
	step("proving the mesh: every host pings every other over tinc")
	for _, from := range Roles {
		for _, to := range Roles {
			if from == to {
				continue
			}
			if err := poll(ctx, 30*time.Second, func() bool {
				// A probe every 0.2 s for up to a second, done at the first reply: tincd drops
				// the first packets to a member until they have exchanged keys, and one dropped
				// probe must not cost a whole second.
				_, code, _ := c.Host(from).Sh(ctx, "ping -c1 -i0.2 -w1 "+mesh[to]+" >/dev/null")
				return code == 0
			}); err != nil {
				for _, h := range []string{from, to} {
					// tincd dumps its connections (USR1) and its nodes and subnets (USR2) into
					// its log, which at its default level says nothing of connections; the
					// kernel's view of its TCP connections beside it.
					out, _, _ := c.Host(h).Sh(ctx, "ip -4 -o addr show tinc-ghost; ls /etc/tinc/ghost/hosts; "+
						"ss -tnio '( sport = :655 or dport = :655 )'; pid=$(cat /run/tinc.ghost.pid 2>/dev/null | head -c 16); "+
						"[ -n \"$pid\" ] && kill -USR1 $pid && kill -USR2 $pid && sleep 0.3; tail -n 60 /var/log/tinc.ghost.log")
					fmt.Fprintf(w, "--- tinc on %s:\n%s\n", h, out)
				}
				return fmt.Errorf("%s cannot ping %s (%s) over the mesh", from, to, mesh[to])
			}
		}
	}
	step("  12 of 12 host pairs answer over 10.8.0.0/24")
	lap("mesh up, all pairs ping")

	if opts.Real {
		err = proveReal(ctx, c, mesh, step)
	} else {
		err = proveStub(ctx, c, mesh, step)
	}
	if err != nil {
		return err
	}
	lap("firewall proven")

	counts, err := apply(" (again: nothing should change)")
	if err != nil {
		return err
	}
	for role, cn := range counts {
		if cn[states.StatusChanged] != 0 {
			return fmt.Errorf("the second apply changed %d resource(s) on %s", cn[states.StatusChanged], role)
		}
	}
	lap("second apply (0 changes)")

	if opts.Real {
		fmt.Fprintf(w, "\nbrine demo --real: the reference deployment on real Debian packages converged 4 systemd hosts; nginx served MariaDB's row through the app over the mesh; a second apply changed nothing.\n")
	} else {
		fmt.Fprintf(w, "\nbrine demo: the reference deployment converged, meshed and firewalled 4 hosts; a second apply changed nothing.\n")
	}
	for _, t := range timings {
		fmt.Fprintln(w, t)
	}
	fmt.Fprintf(w, "  %-38s %6.2fs\n", "total", time.Since(start).Seconds())
	return nil
}

// proveStub proves the firewall with the stand-in packages: a port ufw closes is refused from
// outside the mesh and served over it.
func proveStub(ctx context.Context, c *testbed.Cluster, mesh map[string]string, step func(string, ...any)) error {
	step("proving the firewall with a listener on port 9000 in the app host")
	app := c.Host("app")
	if _, err := app.Start("listener", "/bin/sh", "-c", "while :; do echo hello | nc -l -p 9000 -q 0 >/dev/null 2>&1 || sleep 0.2; done"); err != nil {
		return err
	}
	outside := func(port string) bool { // from the machine, outside the mesh
		conn, err := net.DialTimeout("tcp", net.JoinHostPort(app.Addr(), port), time.Second)
		if err == nil {
			conn.Close()
		}
		return err == nil
	}
	overMesh := func(from, to, port string) (string, bool) {
		out, code, _ := c.Host(from).Sh(ctx, "nc -w 2 "+mesh[to]+" "+port+" </dev/null")
		return strings.TrimSpace(out), code == 0 && strings.TrimSpace(out) != ""
	}
	if err := poll(ctx, 5*time.Second, func() bool { _, ok := overMesh("cache", "app", "9000"); return ok }); err != nil {
		return errors.New("cache cannot reach app:9000 over the mesh")
	}
	step("  app:9000 from cache over the mesh: served")
	// A dropped dial is proven by its timeout: the two from outside wait together, while the
	// checks over the mesh run.
	open9000, open2368 := make(chan bool, 1), make(chan bool, 1)
	go func() { open9000 <- outside("9000") }()
	go func() { open2368 <- outside("2368") }()
	if out, ok := overMesh("cache", "app", "2368"); !ok {
		return errors.New("cache cannot reach the blog on app:2368 over the mesh")
	} else {
		step("  the blog on app:2368 from cache over the mesh: %q", out)
	}
	if out, ok := overMesh("app", "db", "3306"); !ok {
		return errors.New("app cannot reach the database on db:3306 over the mesh")
	} else {
		step("  the database on db:3306 from app over the mesh: %q", out)
	}
	if <-open9000 {
		return fmt.Errorf("app:9000 is reachable from outside the mesh (%s): the firewall is open", app.Addr())
	}
	step("  app:9000 from outside the mesh (%s): refused by ufw", app.Addr())
	if <-open2368 {
		return errors.New("the blog is reachable from outside the mesh")
	}
	up, _, _, _ := c.Host("cache").Run(ctx, "cat", "/etc/brine-proxy/upstreams.conf")
	step("  the cache's upstreams, from peers(\"group:app\"):\n%s", indent(up))

	return nil
}

// proveReal proves the real deployment: an HTTP request to cache's public address is answered by
// nginx, which proxies it over the mesh to the app, which reads its row from MariaDB over the
// mesh; the database and the app are refused from outside the mesh, and MariaDB listens on the
// mesh address alone.
func proveReal(ctx context.Context, c *testbed.Cluster, mesh map[string]string, step func(string, ...any)) error {
	cache, app, db := c.Host("cache"), c.Host("app"), c.Host("db")
	url := "http://" + cache.Addr() + "/"
	step("GET %s from this machine (outside the mesh)", url)
	hc := &http.Client{Timeout: 20 * time.Second}
	var status int
	var body string
	if err := poll(ctx, 90*time.Second, func() bool {
		resp, err := hc.Get(url)
		if err != nil {
			body = err.Error()
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		status, body = resp.StatusCode, string(b)
		return status == http.StatusOK
	}); err != nil {
		return fmt.Errorf("GET %s: %d %s", url, status, strings.TrimSpace(body))
	}
	step("  %d from nginx on cache:\n%s", status, indent(body))
	wantFrom := "served by ghost-app on app from the database at " + mesh["db"]
	if !strings.Contains(body, wantFrom) {
		return fmt.Errorf("the answer does not come from the app reading the database over the mesh (want %q):\n%s", wantFrom, body)
	}
	outside := func(h *testbed.Host, port string) bool {
		conn, err := net.DialTimeout("tcp", net.JoinHostPort(h.Addr(), port), 2*time.Second)
		if err == nil {
			conn.Close()
		}
		return err == nil
	}
	if outside(db, "3306") {
		return fmt.Errorf("MariaDB on db (%s:3306) is reachable from outside the mesh", db.Addr())
	}
	step("  db:3306 from outside the mesh (%s): refused", db.Addr())
	if outside(app, "2368") {
		return fmt.Errorf("the app (%s:2368) is reachable from outside the mesh", app.Addr())
	}
	step("  app:2368 from outside the mesh (%s): refused", app.Addr())
	if _, code, _ := app.Sh(ctx, "nc -z -w 3 "+mesh["db"]+" 3306"); code != 0 {
		return fmt.Errorf("app cannot reach MariaDB at %s:3306 over the mesh", mesh["db"])
	}
	ln, _, _ := db.Sh(ctx, "ss -Hltn 'sport = :3306' | awk '{print $4}'")
	if strings.TrimSpace(ln) != mesh["db"]+":3306" {
		return fmt.Errorf("MariaDB listens on %q, want the mesh address %s:3306 alone", strings.TrimSpace(ln), mesh["db"])
	}
	step("  db:3306 from app over the mesh: open; MariaDB listens on %s only", strings.TrimSpace(ln))
	for _, h := range c.Hosts() {
		out, _, _ := h.Sh(ctx, "systemctl is-active brine-minion")
		if strings.TrimSpace(out) != "active" {
			return fmt.Errorf("%s: brine-minion.service is %q", h.Name(), strings.TrimSpace(out))
		}
	}
	up, _, _, _ := cache.Run(ctx, "cat", "/etc/nginx/conf.d/ghost.conf")
	step("  nginx's site on cache, its upstreams from peers(\"*\"):\n%s", indent(up))
	return nil
}

// startUnitMinion installs the minion in a systemd host as the Debian package and the cloud
// bootstrap do (/usr/bin/brine-minion, /etc/brine/minion.hcl, the shipped brine-minion unit) and
// starts the unit.
func startUnitMinion(ctx context.Context, h *testbed.Host, bin, cfg string) error {
	root := h.Root()
	if err := copyFile(bin, filepath.Join(root, strings.TrimPrefix(minionbin.Path, "/"))); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(root, "etc/brine"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(root, "etc/brine/minion.hcl"), []byte(cfg), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(root, "etc/systemd/system/brine-minion.service"), []byte(cloud.MinionUnit), 0o644); err != nil {
		return err
	}
	out, code, err := h.Sh(ctx, "systemctl daemon-reload && systemctl enable --now brine-minion.service 2>&1")
	if err != nil || code != 0 {
		return fmt.Errorf("%s: start brine-minion.service: exit %d %v: %s", h.Name(), code, err, out)
	}
	return nil
}

func poll(ctx context.Context, d time.Duration, cond func() bool) error {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return errors.New("timed out")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

func copyFile(from, to string) error {
	data, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, data, 0o755)
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

func indent(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return "    " + strings.Join(lines, "\n    ")
}
