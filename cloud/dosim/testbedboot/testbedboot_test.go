package testbedboot_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/brinecm/brine/cloud"
	"github.com/brinecm/brine/cloud/dosim"
	"github.com/brinecm/brine/cloud/dosim/testbedboot"
	"github.com/brinecm/brine/testbed"
)

// stubMinion stands in for the minion binary the master serves: run as `brine-minion [-c FILE]`,
// it reads the id and enrolment token of the config the bootstrap wrote (/etc/brine/minion.hcl
// by default, as the real minion) and "enrols" by writing the token where the test's master
// looks.
const stubMinion = `#!/bin/sh
[ "$(basename "$0")" = brine-minion ] || exit 2
cfg=/etc/brine/minion.hcl
[ "${1:-}" = -c ] && cfg=$2
id=$(sed -n 's/^id *= *"\(.*\)"$/\1/p' "$cfg")
tok=$(sed -n 's/^token *= *"\(.*\)"$/\1/p' "$cfg")
printf '%s' "$tok" > "/srv/brine/.enrol-$id" && mv "/srv/brine/.enrol-$id" "/srv/brine/enrolled-$id"
exec sleep 3600
`

// shareMaster is the master's side as far as this test needs it: it serves the binary on the
// cluster bridge, issues single-use tokens, and accepts an enrolment when a host wrote a token
// it issued into the shared directory.
type shareMaster struct {
	url, sha, shared string

	mu     sync.Mutex
	issued map[string]bool // token -> used
}

func (m *shareMaster) CreateToken(_ context.Context, _ string, groups []string, _ time.Duration) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	tok := fmt.Sprintf("tok%d-%d", len(m.issued), time.Now().UnixNano())
	m.issued[tok] = false
	return tok, nil
}

func (m *shareMaster) Bootstrap(context.Context) (cloud.BootstrapInfo, error) {
	return cloud.BootstrapInfo{BinaryURL: m.url, SHA256: m.sha, MasterAddr: "10.213.0.1:4505", MasterFingerprint: "SHA256:test"}, nil
}

func (m *shareMaster) WaitEnrolled(ctx context.Context, id string) error {
	for {
		b, err := os.ReadFile(filepath.Join(m.shared, "enrolled-"+id))
		if err == nil {
			m.mu.Lock()
			used, ok := m.issued[string(b)]
			if ok && !used {
				m.issued[string(b)] = true
			}
			m.mu.Unlock()
			if !ok || used {
				return errors.New("enrolment token refused")
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (m *shareMaster) Converge(context.Context, string, []string) error { return nil }

// Droplets boot as systemd hosts, as droplets are: the user_data installs the pinned binary and
// the shipped unit, and the minion runs from brine-minion.service.
func TestCreateBootstrapsTestbedHosts(t *testing.T) {
	tb := testbed.NewSystemdT(t)
	ln, err := net.Listen("tcp", tb.BridgeAddr()+":0")
	if err != nil {
		t.Fatal(err)
	}
	served := []byte(stubMinion)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(served) })}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	sum := sha256.Sum256(served)
	m := &shareMaster{url: "http://" + ln.Addr().String() + "/bootstrap/brine-minion", sha: hex.EncodeToString(sum[:]),
		shared: tb.SharedDir(), issued: map[string]bool{}}

	booter := testbedboot.New(tb)
	sim := dosim.New(dosim.Options{Booter: booter})
	simURL, err := sim.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	c, err := cloud.NewClient(cloud.ClientOptions{Token: cloud.NewToken(sim.Token()), APIURL: simURL,
		PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	prof := &cloud.Profile{Name: "app", Region: "ams3", Size: "s-1vcpu-1gb", Image: "ubuntu-24-04-x64", Groups: []string{"app"}}
	ctx := context.Background()
	res, err := c.Create(ctx, cloud.CreateRequest{Profile: prof, Names: []string{"app-1", "app-2", "app-3"}, Master: m,
		ConvergeTimeout: 20 * time.Second})
	if err != nil {
		for _, n := range []string{"app-1", "app-2", "app-3"} {
			t.Logf("cloud-init of %s:\n%s", n, booter.CloudInitLog(n))
		}
		t.Fatal(err)
	}
	for _, d := range res.Droplets {
		h := tb.Host(d.Name)
		if h == nil || d.PublicIP != h.Addr() {
			t.Fatalf("%s: address %s, host %v", d.Name, d.PublicIP, h)
		}
		out, code, err := h.Sh(ctx, "stat -c %a /etc/brine/minion.hcl; sha256sum /usr/bin/brine-minion; grep groups /etc/brine/minion.hcl")
		if err != nil || code != 0 || !strings.HasPrefix(out, "600\n") || !strings.Contains(out, m.sha) || !strings.Contains(out, `["app"]`) {
			t.Fatalf("%s after bootstrap: %d %v\n%s", d.Name, code, err, out)
		}
		// The minion (the stub's `sleep 3600`) runs from the unit, enabled for the next boot.
		out, code, err = h.Sh(ctx, "systemctl is-enabled brine-minion; systemctl is-active brine-minion; "+
			"cat /proc/$(systemctl show -p MainPID --value brine-minion)/cgroup; cmp /etc/systemd/system/brine-minion.service - <<'EOF'\n"+
			cloud.MinionUnit+"EOF\n")
		if err != nil || code != 0 || !strings.HasPrefix(out, "enabled\nactive\n") || !strings.Contains(out, "/system.slice/brine-minion.service\n") {
			t.Fatalf("%s: the minion does not run from the shipped unit: %d %v\n%s", d.Name, code, err, out)
		}
	}

	// A binary that is not the pinned one is refused: the droplet never enrols.
	served = []byte(stubMinion + "# tampered\n")
	res, err = c.Create(ctx, cloud.CreateRequest{Profile: prof, Names: []string{"evil-1"}, Master: m,
		ConvergeTimeout: 2 * time.Second})
	if err == nil || res.Droplets[0].Stage != cloud.StageActive {
		t.Fatalf("tampered binary: %v %+v", err, res.Droplets)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(booter.CloudInitLog("evil-1"), "sha256 mismatch") {
		if time.Now().After(deadline) {
			t.Fatalf("cloud-init log: %s", booter.CloudInitLog("evil-1"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join(tb.SharedDir(), "enrolled-evil-1")); err == nil {
		t.Fatal("a tampered binary ran")
	}

	// Destroy powers the host off: nothing of it runs any more.
	h1 := tb.Host("app-1")
	if _, err := c.Destroy(ctx, cloud.DestroyRequest{Names: []string{"app-1"}}); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(20 * time.Second)
	for h1.Alive() {
		if time.Now().After(deadline) {
			t.Fatal("app-1 still runs after destroy")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !tb.Host("app-2").Alive() {
		t.Fatal("destroying app-1 took app-2 down")
	}
}
