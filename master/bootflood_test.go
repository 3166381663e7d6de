package master_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/brinecm/brine/master"
)

// Issue 10, the bootstrap endpoint: clients that request the binary and then read nothing
// (a slow-read attack) from 16 addresses took all 128 of its connections for up to the 5 min
// write timeout, and every droplet's download was refused meanwhile. Now a new connection
// takes the place of the one that has received least per second: a droplet's download
// completes, whole, while they hold on.
func TestBootstrapSurvivesSlowReaders(t *testing.T) {
	m := master.TestMaster(t, func(c *master.Config) { c.BootstrapAddr = "127.0.0.1:0" })
	addr := m.BootstrapAddr()
	tinyWindow := func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		if err != nil {
			return err
		}
		return serr
	}
	const sources, perSource = 16, 8 // the endpoint's limits: 128 in all, 8 per source
	for s := range sources {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(2+s))}, Control: tinyWindow}
		for range perSource {
			c, err := d.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			fmt.Fprintf(c, "GET /brine-minion HTTP/1.1\r\nHost: master\r\n\r\n")
		}
	}
	time.Sleep(1500 * time.Millisecond) // they are older than any place is protected for

	exe, _ := os.Executable()
	raw, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(raw)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := range 3 { // one after another, as droplets come
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/brine-minion", nil)
		resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
		if err != nil {
			t.Fatalf("download %d while 128 slow readers hold on: %v", i+1, err)
		}
		h := sha256.New()
		n, err := io.Copy(h, resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || [32]byte(h.Sum(nil)) != want {
			t.Fatalf("download %d: %s, %d bytes, %v", i+1, resp.Status, n, err)
		}
	}
}
