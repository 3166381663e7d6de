package master_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/brinecm/brine/master"
)

// Schedule blocks and the history settings in master.hcl: accepted, and every mistake named.
func TestScheduleConfig(t *testing.T) {
	dir := t.TempDir()
	load := func(body string) (master.Config, string) {
		p := filepath.Join(dir, "master.hcl")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		c, diags := master.LoadConfig(p, dir)
		return c, diags.Error()
	}
	c, errs := load(`site = "/etc/brine/states"
job_retention = "48h"
job_max = 500
metrics_addr = "127.0.0.1:9105"
schedule "nightly" {
  target = "group:web"
  every  = "24h"
  splay  = "30m"
}
schedule "watch" {
  every = "15m"
  mode  = "drift"
}
`)
	if errs != "no diagnostics" && errs != "" {
		t.Fatal(errs)
	}
	if len(c.Schedules) != 2 || c.Schedules[0].Mode != "converge" || c.Schedules[1].Target != "*" || c.JobMax != 500 || c.MetricsAddr != "127.0.0.1:9105" {
		t.Fatalf("%+v", c)
	}
	for body, want := range map[string]string{
		`schedule "a" { every = "1h" }`: `no site is set`,
		`site = "/s"
schedule "a" {
 every = "1h"
 mode = "drfit"
}`: `mode "drfit" is neither "converge" nor "drift"`,
		`site = "/s"
schedule "a" { every = "10ms" }`: `every = "10ms": want a duration of at least 1s`,
		`site = "/s"
schedule "a" {
 every = "1h"
 splay = "-1s"
}`: `splay = "-1s"`,
		`site = "/s"
schedule "a" {
 every = "1h"
 target = "web* and"
}`: `schedule "a": target`,
		`site = "/s"
schedule "a" { every = "1h" }
schedule "a" { every = "2h" }`: `each schedule needs its own`,
		`schedule "a" { }`:     `Missing required argument`,
		`job_retention = "0s"`: `bad duration "0s"`,
		`job_max = -1`:         `job_max must not be negative`,
	} {
		if _, errs := load(body); !strings.Contains(errs, want) {
			t.Errorf("%s\n: got %q, want %q", body, errs, want)
		}
	}
}
