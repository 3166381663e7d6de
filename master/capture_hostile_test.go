package master_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	bcapture "github.com/brinecm/brine/capture"
	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/master"
	"github.com/brinecm/brine/states"
)

// A compromised minion answers a capture job (`brine capture evil --site SITE`) with files whose
// paths leave its own bundle ("../base/x.hcl", "./../base/x.hcl", "files/../../base/x.hcl"): had
// the site been written, the site's bundle base, which every minion converges, would hold the
// minion's resources, and the next converge (a schedule's, every 30 minutes) would apply them as
// root on every host. The split refuses such a capture whole, nothing of it is written, and a
// converge of the site on another minion applies the site's own bundle only.
func TestEvilCaptureStaysInItsBundle(t *testing.T) {
	m := master.TestMaster(t)
	acceptedMinion(t, m, "good1", nil)
	evil := evilMinion(t, m, "evil", nil, nil)
	for _, bad := range []string{"../base/pwn.hcl", "./../base/pwn.hcl", "files/../../base/pwn.hcl", "/base/pwn.hcl", "files//../../base/pwn.hcl"} {
		t.Run(strings.ReplaceAll(bad, "/", "_"), func(t *testing.T) {
			out := t.TempDir()
			siteDir := t.TempDir()
			for p, s := range map[string]string{
				"site.hcl": "assign \"*\" { bundles = [\"base\"] }\n",
				"base/main.hcl": `file "motd" {
		  path    = "` + out + `/motd-${minion.id}"
		  content = "managed"
		}
		`,
			} {
				os.MkdirAll(filepath.Dir(filepath.Join(siteDir, p)), 0o700)
				if err := os.WriteFile(filepath.Join(siteDir, p), []byte(s), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			payload := func(name string) []byte {
				return []byte(`file "` + name + `" {
		  path    = "` + out + `/` + name + `-${minion.id}"
		  content = "written by the evil minion's capture"
		}
		`)
			}
			// What `brine capture evil --site SITE --out SITE` does with the returns.
			files := evilCapture(t, m, evil, map[string][]byte{"files.hcl": payload("own"), bad: payload("pwned")})
			tree, err := states.ReadBundle(siteDir)
			if err != nil {
				t.Fatal(err)
			}
			split, err := bcapture.Split(map[string]map[string][]byte{"evil": files}, map[string][]string{"evil": nil}, tree.Files)
			if err == nil {
				err = bcapture.WriteInto(siteDir, split, tree.Files)
			}
			if err == nil || !strings.Contains(err.Error(), "evil") || !strings.Contains(err.Error(), "its bundle") {
				t.Errorf("the capture was written (error %v)", err)
			}

			// The site as it is now, converged on good1.
			tree, err = states.ReadBundle(siteDir)
			if err != nil {
				t.Fatal(err)
			}
			site, diags := master.LoadSite(tree, true)
			if diags.HasErrors() {
				t.Fatal(diags.Error())
			}
			if _, err := m.Converge(context.Background(), master.ConvergeSpec{Target: "good1", Site: site, Timeout: 30 * time.Second}, master.Rollout{}, nil); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(out, "motd-good1")); err != nil {
				t.Fatalf("the site's own bundle was not applied on good1: %v", err)
			}
			if _, err := os.Stat(filepath.Join(out, "pwned-good1")); err == nil {
				t.Fatalf("good1 applied a resource of the evil minion's capture (site files: %v)", keysOf(tree.Files))
			}
		})
	}
}

// evilCapture publishes a capture job to the evil minion, which answers it with files, and
// returns the files as the CLI receives them.
func evilCapture(t *testing.T, m *master.Master, evil *rawClient, files map[string][]byte) map[string][]byte {
	t.Helper()
	published := make(chan string, 1)
	done := make(chan *master.Result, 1)
	go func() {
		res, err := m.Run(context.Background(), master.JobSpec{Kind: wire.JobCapture, Target: "evil", Minions: []string{"evil"},
			Capture: &wire.CaptureSpec{}, Timeout: 30 * time.Second}, func(e master.Event) {
			if e.Event == "published" {
				published <- e.JID
			}
		})
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	jid := <-published
	rep, _ := json.Marshal(wire.CaptureReport{Files: files})
	data, _ := json.Marshal(wire.Return{JID: jid, Minion: "evil", Kind: wire.JobCapture, Success: true, Report: rep})
	// A return of megabytes takes the master more than request's second under the race detector.
	evil.send(evil.requestFrame(wire.KindReturn, wire.SignedReturn{Data: data, Sig: evil.key.Sign(wire.DomainReturn, data)}))
	if r, ok := evil.replyWithin(30 * time.Second); !ok || !r.OK {
		t.Fatalf("the capture's return was refused: %+v", r)
	}
	res := <-done
	ret, ok := res.Returns["evil"]
	if !ok {
		t.Fatalf("no return: %+v", res)
	}
	var cr wire.CaptureReport
	if err := json.Unmarshal(ret.Report, &cr); err != nil {
		t.Fatal(err)
	}
	return cr.Files
}

// A compromised minion's capture nested a million levels deep (1 MiB of "[", of a return's 6 MiB)
// is refused with a diagnostic by the split `brine capture` makes; it overflowed the parser's
// stack and killed the CLI (fatal error: stack overflow, after a stack of 1 GB).
func TestEvilCaptureDeepNesting(t *testing.T) {
	m := master.TestMaster(t)
	evil := evilMinion(t, m, "evil", nil, nil)
	for name, src := range map[string]string{
		"brackets":  "x = " + strings.Repeat("[", 1<<19),
		"blocks":    strings.Repeat("a {\n", 1<<17),
		"templates": "x = \"" + strings.Repeat("${\"", 1<<17),
	} {
		files := evilCapture(t, m, evil, map[string][]byte{"files.hcl": []byte(src)})
		_, err := bcapture.Split(map[string]map[string][]byte{"evil": files}, nil, nil)
		if err == nil || !strings.Contains(strings.ToLower(err.Error()), "nest") {
			t.Fatalf("%s: split: %v", name, err)
		}
	}
}

// A compromised minion's capture of flat HCL, within the return's bound (wire.MaxCaptureFiles)
// but over capture.MaxHCL, is refused before anything parses it: 4 MiB of one list took about
// 3.3 GB to parse in the operator's brine capture.
func TestEvilCaptureHCLBounded(t *testing.T) {
	m := master.TestMaster(t)
	evil := evilMinion(t, m, "evil", nil, nil)
	list := "x = [" + strings.Repeat("1,", 2<<20) + "]\n"
	files := evilCapture(t, m, evil, map[string][]byte{"a.hcl": []byte(list[:len(list)/2] + "]\n"), "b.hcl": []byte("y = [" + list[5:])})
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := bcapture.Split(map[string]map[string][]byte{"evil": files}, nil, nil)
	runtime.ReadMemStats(&after)
	if err == nil || !strings.Contains(err.Error(), "at most") {
		t.Fatalf("split of %d bytes of HCL: %v", len(list), err)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 64<<20 {
		t.Errorf("refusing the capture allocated %d MiB", alloc>>20)
	}
}

func keysOf(m map[string][]byte) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}
