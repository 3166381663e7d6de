package file

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/brinecm/brine/states"
	"github.com/brinecm/brine/states/resources/restest"
)

// These tests play a local user who can write a directory brine writes into as root (their
// home, a service's data directory) and tries to make brine change a file of root's instead.
// Root's files are decoys in the test's temporary directory; the user is uid 65534.

const nobody = 65534

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root, to give a directory to another user")
	}
}

// hostileTree makes ROOT/home/alice (alice's) and ROOT/rootssh/authorized_keys (root's, 0600,
// "root's\n"), and returns ROOT.
func hostileTree(t *testing.T) (root, home, decoy string) {
	t.Helper()
	root = t.TempDir()
	restest.Must(t, os.Chmod(root, 0o755))
	home, decoy = filepath.Join(root, "home", "alice"), filepath.Join(root, "rootssh")
	restest.Must(t, os.MkdirAll(home, 0o755))
	restest.Must(t, os.MkdirAll(decoy, 0o700))
	restest.Must(t, os.WriteFile(filepath.Join(decoy, "authorized_keys"), []byte("root's\n"), 0o600))
	restest.Must(t, os.Chown(home, nobody, nobody))
	return root, home, decoy
}

// decoyUntouched fails t when anything in decoy changed: its one file's content and mode, or
// another entry.
func decoyUntouched(t *testing.T, decoy string) {
	t.Helper()
	entries, _ := os.ReadDir(decoy)
	if len(entries) != 1 {
		t.Errorf("the decoy of root's directory now holds %v", entries)
	}
	p := filepath.Join(decoy, "authorized_keys")
	data, err := os.ReadFile(p)
	st, _ := os.Stat(p)
	if err != nil || string(data) != "root's\n" || st.Mode().Perm() != 0o600 || st.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Errorf("root's decoy file changed: %q %v %v", data, st.Mode(), err)
	}
}

// swapForLink replaces p (a file or a directory alice owns) with a link to target, as alice would.
func swapForLink(t *testing.T, p, target string) {
	t.Helper()
	restest.Must(t, os.RemoveAll(p))
	restest.Must(t, os.Symlink(target, p))
	restest.Must(t, os.Lchown(p, nobody, nobody))
}

// Alice replaces her .ssh with a link to root's: every kind of file resource under it fails,
// naming the link and its directory's owner, and root's directory is untouched.
func TestLinkInAUserDirectoryIsRefused(t *testing.T) {
	needRoot(t)
	for _, tc := range []struct{ name, block string }{
		{"content", `content = "alice's key\n"`},
		{"mode", `mode = "0644"`},
		{"owner", `owner = "65534"`},
		{"absent", `state = "absent"`},
		{"directory", `state = "directory"`},
		{"new parents", `content = "x"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, home, decoy := hostileTree(t)
			swapForLink(t, filepath.Join(home, ".ssh"), decoy)
			p := filepath.Join(home, ".ssh", "authorized_keys")
			if tc.name == "directory" {
				p = filepath.Join(home, ".ssh", "sub")
			}
			if tc.name == "new parents" {
				p = filepath.Join(home, ".ssh", "new", "deep")
			}
			src := map[string]string{"main.hcl": "file \"" + p + "\" {\n  " + tc.block + "\n}\n"}
			for _, dry := range []bool{true, false} {
				rep := runSrc(t, src, dry)
				res := rep.Results[0]
				if res.Status != states.StatusFailed || !strings.Contains(res.Error, filepath.Join(home, ".ssh")) || !strings.Contains(res.Error, "uid 65534") {
					t.Fatalf("dry run %v: %s %q, want a failure naming the link and its directory's owner", dry, res.Status, res.Error)
				}
			}
			decoyUntouched(t, decoy)
		})
	}
}

// The same, with the link put in place after the check found a real directory: the apply,
// which reaches the directory again, refuses it.
func TestLinkSwappedInAfterTheCheckIsRefused(t *testing.T) {
	needRoot(t)
	for _, tc := range []struct {
		name string
		res  fileRes
	}{
		{"content", fileRes{state: "file", content: []byte("alice's key\n")}},
		{"mode", fileRes{state: "file", mode: 0o644, hasMode: true}},
		{"absent", fileRes{state: "absent"}},
		{"directory", fileRes{state: "directory"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, home, decoy := hostileTree(t)
			ssh := filepath.Join(home, ".ssh")
			restest.Must(t, os.Mkdir(ssh, 0o700))
			restest.Must(t, os.Chown(ssh, nobody, nobody))
			name := "authorized_keys"
			if tc.name == "directory" {
				name = "sub"
			} else {
				restest.Must(t, os.WriteFile(filepath.Join(ssh, name), []byte("old\n"), 0o600))
			}
			r := tc.res
			r.path, r.uid, r.gid = filepath.Join(ssh, name), -1, -1
			ctx, env := context.Background(), &states.Env{}
			if d, err := r.Check(ctx, env); err != nil || d == "" {
				t.Fatalf("check: %q %v, want a difference", d, err)
			}
			swapForLink(t, ssh, decoy)
			err := r.Apply(ctx, env)
			if err == nil || !strings.Contains(err.Error(), ssh) || !strings.Contains(err.Error(), "uid 65534") {
				t.Fatalf("apply through alice's link: %v", err)
			}
			decoyUntouched(t, decoy)
		})
	}
}

// Between the check and the chmod of her file, alice swaps it for a link to root's file: the
// chmod fails and root's file keeps its mode; a chown changes the link itself, as lchown does.
func TestChmodDoesNotFollowASwappedLink(t *testing.T) {
	needRoot(t)
	_, home, decoy := hostileTree(t)
	p := filepath.Join(home, "notes")
	restest.Must(t, os.WriteFile(p, []byte("x"), 0o600))
	restest.Must(t, os.Chown(p, nobody, nobody))
	r := &fileRes{path: p, state: "file", content: []byte("x"), mode: 0o644, hasMode: true, uid: 0, gid: 0, owner: "root", group: "root"}
	ctx, env := context.Background(), &states.Env{}
	if d, err := r.Check(ctx, env); err != nil || !strings.Contains(d, "mode") || !strings.Contains(d, "owner") {
		t.Fatalf("check: %q %v, want the mode and the owner to change", d, err)
	}
	swapForLink(t, p, filepath.Join(decoy, "authorized_keys"))
	if err := r.Apply(ctx, env); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("apply after the swap: %v, want a refusal", err)
	}
	decoyUntouched(t, decoy)

	r.hasMode, r.mode = false, 0
	restest.Must(t, os.Remove(p))
	restest.Must(t, os.WriteFile(p, []byte("x"), 0o600))
	restest.Must(t, os.Chown(p, nobody, nobody))
	if d, err := r.Check(ctx, env); err != nil || !strings.Contains(d, "owner") {
		t.Fatalf("check: %q %v, want the owner to change", d, err)
	}
	restest.Must(t, os.Chown(filepath.Join(decoy, "authorized_keys"), nobody, nobody))
	swapForLink(t, p, filepath.Join(decoy, "authorized_keys"))
	restest.Must(t, r.Apply(ctx, env))
	if st, _ := os.Stat(filepath.Join(decoy, "authorized_keys")); st.Sys().(*syscall.Stat_t).Uid != nobody {
		t.Fatal("the chown followed the link")
	}
	if st, _ := os.Lstat(p); st.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Fatal("the link was not chowned")
	}
}

// A link in a directory only root can write (like /lib -> usr/lib, /var/run -> /run) is
// followed, for every kind of file resource.
func TestLinkOnlyRootCouldPlaceIsFollowed(t *testing.T) {
	root := t.TempDir()
	restest.Must(t, os.Chmod(root, 0o755))
	restest.Must(t, os.MkdirAll(filepath.Join(root, "usr", "lib"), 0o755))
	restest.Must(t, os.Symlink("usr/lib", filepath.Join(root, "lib")))
	gone := filepath.Join(root, "usr", "lib", "gone")
	restest.Must(t, os.WriteFile(gone, []byte("x"), 0o644))
	lib := filepath.Join(root, "lib")
	src := map[string]string{"main.hcl": `
file "` + lib + `/x.conf" {
  content = "x\n"
  mode    = "0640"
}
file "` + lib + `/d/e" { state = "directory" }
file "` + lib + `/gone" { state = "absent" }
`}
	if rep := runSrc(t, src, false); rep.Failed() {
		t.Fatalf("%+v", rep.Results)
	}
	if data, _ := os.ReadFile(filepath.Join(root, "usr", "lib", "x.conf")); string(data) != "x\n" {
		t.Fatalf("x.conf: %q", data)
	}
	if st, err := os.Stat(filepath.Join(root, "usr", "lib", "d", "e")); err != nil || !st.IsDir() {
		t.Fatalf("d/e: %v", err)
	}
	if _, err := os.Lstat(gone); !os.IsNotExist(err) {
		t.Fatalf("gone: %v", err)
	}
	if again := runSrc(t, src, false); again.Counts()[states.StatusChanged] != 0 || again.Failed() {
		t.Fatalf("second apply: %+v", again.Results)
	}
}

// A user plants at a managed path a huge file: the check reads no more of it than it needs to
// tell that it differs.
func TestCheckReadsAHugeFileOnlyInPart(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	f, err := os.Create(p)
	restest.Must(t, err)
	restest.Must(t, f.Truncate(256<<20)) // sparse: no disk used
	restest.Must(t, f.Close())
	r := &fileRes{path: p, state: "file", content: []byte("small\n"), uid: -1, gid: -1}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	d, err := r.Check(context.Background(), &states.Env{})
	runtime.ReadMemStats(&after)
	if err != nil || d == "" {
		t.Fatalf("check: %.200q %v, want a difference", d, err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 32<<20 {
		t.Fatalf("the check of a 256 MiB file allocated %d MiB", n>>20)
	}
}

// After the check saw a regular file, a user replaces it with a FIFO (with no writer), or a link
// to one: reading it must neither block nor follow the link.
func TestCheckDoesNotBlockOnAFIFO(t *testing.T) {
	for _, link := range []bool{false, true} {
		dir := t.TempDir()
		p, fifo := filepath.Join(dir, "f"), filepath.Join(dir, "fifo")
		restest.Must(t, os.WriteFile(p, []byte("x"), 0o644))
		st, err := os.Lstat(p)
		restest.Must(t, err)
		restest.Must(t, os.Remove(p))
		if link {
			restest.Must(t, syscall.Mkfifo(fifo, 0o600))
			restest.Must(t, os.Symlink(fifo, p))
		} else {
			restest.Must(t, syscall.Mkfifo(p, 0o600))
			fifo = p
		}
		r := &fileRes{path: p, state: "file", content: []byte("y"), uid: -1, gid: -1}
		done := make(chan error, 1)
		go func() {
			_, err := r.checkFileContent(p, st, true, r.content, 0o644)
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "not a regular file") {
				t.Errorf("link %v: %v, want an error", link, err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("link %v: the check blocked on the FIFO", link)
			if w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
				w.Close() // let the blocked reader go
			}
			<-done
		}
	}
}
