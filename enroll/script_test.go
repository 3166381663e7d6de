package enroll

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/brinecm/brine/testbed"
)

// The install script itself, in a systemd testbed host, its stdin given as enroll gives it:
// a verdict other than install writes nothing; a binary whose sha256 is not the one the script
// was made for installs nothing (neither the binary nor minion.hcl, no temporary file left); the
// right one, gzipped, is installed with minion.hcl and the unit started, and then a run that
// keeps it sends nothing and leaves it.
func TestInstallScriptOnHost(t *testing.T) {
	if testing.Short() {
		t.Skip("testbed test skipped in -short mode")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := readBinary(exe)
	if err != nil {
		t.Fatal(err)
	}
	gz, err := packGzip(bin.data)
	if err != nil {
		t.Fatal(err)
	}
	c := testbed.NewSystemdT(t, "h1")
	h := c.Host("h1")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conf := "id = \"h1\"\nmaster = \"127.0.0.1\"\ntoken = \"brn2-test\"\n"
	run := func(sum, verdict string, payload []byte) (string, string, error) {
		cmd := h.Command(ctx, "sh", "-c", installScript(sum))
		cmd.Stdin = bytes.NewReader(append([]byte(verdict+conf), payload...))
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		return stdout.String(), stderr.String(), err
	}
	left := func() string {
		out, _, _ := h.Sh(ctx, "ls /usr/bin/brine-minion /usr/bin/.brine-minion.* /etc/brine/minion.hcl /etc/brine/.minion.hcl.* /etc/systemd/system/brine-minion.service 2>/dev/null; true")
		return strings.TrimSpace(out)
	}
	install := fmt.Sprintf("install %d %s\n", len(conf), formatGzip)

	out, errOut, err := run(bin.sum, "stop\n", nil)
	if lines := strings.Split(out, "\n"); err != nil || len(lines) != inspectLines+1 || lines[1] != bin.arch || lines[2] != "systemd" || lines[3] != "-" || left() != "" {
		t.Fatalf("stop: %v\n%s%s\nleft: %s", err, out, errOut, left())
	}
	wrong := strings.Repeat("0", 64)
	if out, errOut, err := run(wrong, install, gz); err == nil || !strings.Contains(errOut, "sha256 mismatch on the host: got "+bin.sum) || strings.Contains(out, installedMarker) || left() != "" {
		t.Fatalf("a binary with another sha256: %v\n%s%s\nleft: %s", err, out, errOut, left())
	}
	if out, errOut, err := run(bin.sum, install, gz[:len(gz)/2]); err == nil || strings.Contains(out, installedMarker) || left() != "" {
		t.Fatalf("half the binary: %v\n%s%s\nleft: %s", err, out, errOut, left())
	}
	if out, errOut, err := run(bin.sum, install, gz); err != nil || !strings.Contains(out, installedMarker+"\n") {
		t.Fatalf("install: %v\n%s%s", err, out, errOut)
	}
	got, _, _ := h.Sh(ctx, "sha256sum /usr/bin/brine-minion | cut -d' ' -f1; stat -c %a /usr/bin/brine-minion /etc/brine/minion.hcl; cat /etc/brine/minion.hcl; systemctl is-enabled brine-minion; systemctl show -p NeedDaemonReload --value brine-minion")
	if want := bin.sum + "\n755\n600\n" + conf + "enabled\nno\n"; got != want {
		t.Fatalf("after install: %q, want %q", got, want)
	}
	out, errOut, err = run(bin.sum, fmt.Sprintf("install %d %s\n", len(conf), formatKeep), nil)
	if lines := strings.Split(out, "\n"); err != nil || lines[3] != bin.sum || strings.Contains(out, installedMarker) {
		t.Fatalf("keep: %v\n%s%s", err, out, errOut)
	}
}
