package minion

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestSeenJobsPersistAndBound(t *testing.T) {
	p := t.TempDir()
	s, err := openSeen(p)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if !s.add("j1", now.Add(time.Hour), now) || s.add("j1", now.Add(time.Hour), now) {
		t.Fatal("first add must succeed, second must not")
	}
	s.add("old", now.Add(time.Second), now)
	s2, err := openSeen(p)
	if err != nil {
		t.Fatal(err)
	}
	if s2.add("j1", now.Add(time.Hour), now) {
		t.Fatal("seen record lost across restart")
	}
	// Expired entries are dropped when new ones come; unexpired ones stay.
	s2.add("j2", now.Add(time.Hour), now.Add(time.Minute))
	if _, ok := s2.jobs["old"]; ok {
		t.Fatal("expired entry kept")
	}
	for i := range maxSeen + 10 {
		s2.jobs[string(rune(i))] = now.Add(time.Duration(i) * time.Hour)
	}
	s2.add("j3", now.Add(time.Hour), now)
	if len(s2.jobs) > maxSeen {
		t.Fatalf("seen record unbounded: %d", len(s2.jobs))
	}
}

func TestConfigDefaultsAndID(t *testing.T) {
	c, diags := LoadConfig("", "10.0.0.1", "web1", t.TempDir())
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if c.pubAddr != "10.0.0.1:4505" || c.reqAddr != "10.0.0.1:4506" || c.heartbeat != 5*time.Second {
		t.Fatalf("defaults: %s %s %v", c.pubAddr, c.reqAddr, c.heartbeat)
	}
	c, _ = LoadConfig("", "10.0.0.1:5506", "web1", t.TempDir())
	if c.pubAddr != "10.0.0.1:5505" || c.reqAddr != "10.0.0.1:5506" {
		t.Fatalf("host:port: %s %s", c.pubAddr, c.reqAddr)
	}
	for _, bad := range []string{"../x", "Web1", "a/b"} {
		if _, diags := LoadConfig("", "10.0.0.1", bad, t.TempDir()); !diags.HasErrors() {
			t.Errorf("id %q accepted", bad)
		}
	}
}

func TestConfigFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "minion.hcl")
	os.WriteFile(p, []byte("master = \"10.0.0.9\"\nid = \"m9\"\ngroups = [\"app\"]\ntoken = \"brn1-x\"\nfacts = { role = \"web\" }\n"), 0o600)
	c, diags := LoadConfig(p, "", "", t.TempDir())
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if c.ID != "m9" || c.reqAddr != "10.0.0.9:4506" || c.Token != "brn1-x" || c.ExtraFacts["role"] != "web" {
		t.Fatalf("%+v", c)
	}
}

func TestConfigMasterList(t *testing.T) {
	dir := t.TempDir()
	write := func(body string) string {
		p := filepath.Join(dir, "minion.hcl")
		os.WriteFile(p, []byte(body+"\nid = \"m9\"\n"), 0o600)
		return p
	}
	c, diags := LoadConfig(write(`master = ["m1", "m2:5506", "10.0.0.3"]`), "", "", dir)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	want := []masterAddr{{"m1:4505", "m1:4506"}, {"m2:5505", "m2:5506"}, {"10.0.0.3:4505", "10.0.0.3:4506"}}
	if !reflect.DeepEqual(c.masters, want) || c.reqAddr != "m1:4506" {
		t.Fatalf("masters = %+v", c.masters)
	}
	// The single-string form and --master (one, or several with commas) still work.
	if c, diags := LoadConfig(write(`master = "m1"`), "", "", dir); diags.HasErrors() || len(c.masters) != 1 || c.Master != "m1" {
		t.Fatalf("string form: %+v %v", c.masters, diags)
	}
	if c, diags := LoadConfig(write(`master = "m1"`), "a,b", "", dir); diags.HasErrors() || len(c.masters) != 2 || c.masters[1].req != "b:4506" {
		t.Fatalf("--master a,b: %+v %v", c.masters, diags)
	}
	for _, bad := range []string{`master = []`, `master = [1, 2]`, `master = ["a", ""]`, `master = {a = "b"}`, `master = [` + strings.Repeat(`"m",`, maxMasters+1) + `]`} {
		if _, diags := LoadConfig(write(bad), "", "", dir); !diags.HasErrors() {
			t.Errorf("%s accepted", bad)
		}
	}
}
