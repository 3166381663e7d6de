package master_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/brinecm/brine/master"
)

// Schedule blocks and the history settings in master.hcl: accepted, and every mistake named
// with the line and column of the value at fault.
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
		`schedule "a" { every = "1h" }`: `master.hcl:1,1-13: Invalid master config; schedules converge the site, and no site is set`,
		`site = "/s"
schedule "a" {
 every = "1h"
 mode = "drfit"
}`: `master.hcl:4,9-16: Invalid master config; mode "drfit" is neither "converge" nor "drift"`,
		`site = "/s"
schedule "a" { every = "10ms" }`: `master.hcl:2,24-30: Invalid master config; every = "10ms": want a duration of at least 1s`,
		`site = "/s"
schedule "a" {
 every = "1h"
 splay = "-1s"
}`: `splay = "-1s"`,
		`site = "/s"
schedule "a" {
 every = "1h"
 target = "web* and"
}`: `master.hcl:4,11-21: Invalid master config; target "web* and": expression ends too early`,
		`site = "/s"
schedule "a" { every = "1h" }
schedule "a" { every = "2h" }`: `each schedule needs its own`,
		`schedule "a" { }`:     `Missing required argument`,
		`job_retention = "0s"`: `master.hcl:1,17-21: Invalid master config; job_retention: bad duration "0s"`,
		`job_max = -1`:         `master.hcl:1,11-13: Invalid master config; job_max must not be negative`,
		`job_history_mb = 10`:  `master.hcl:1,18-20: Invalid master config; job_history_mb must be at least 64 (or 0: the default, 8192)`,
		`job_history_mb = -1`:  `Invalid master config; job_history_mb must be at least 64`,
	} {
		if _, errs := load(body); !strings.Contains(errs, want) {
			t.Errorf("%s\n: got %q, want %q", body, errs, want)
		}
	}
}
