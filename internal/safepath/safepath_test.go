package safepath

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

const nobody = 65534

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root, to give a directory to another user")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// A tree like a host's: a root-owned directory with a merged-/usr link (lib -> usr/lib), an
// absolute link, a user's home holding a link to a decoy of root's directory, a world-writable
// sticky directory and a group-writable one holding links too.
func tree(t *testing.T) string {
	root := t.TempDir()
	must(t, os.Chmod(root, 0o755))
	for _, d := range []string{"usr/lib", "rootssh", "home/alice", "tmp", "shared", "run"} {
		must(t, os.MkdirAll(filepath.Join(root, d), 0o755))
	}
	must(t, os.Symlink("usr/lib", filepath.Join(root, "lib")))
	must(t, os.Symlink(filepath.Join(root, "run"), filepath.Join(root, "varrun")))
	must(t, os.WriteFile(filepath.Join(root, "rootssh", "authorized_keys"), []byte("root's\n"), 0o600))
	must(t, os.Symlink(filepath.Join(root, "rootssh"), filepath.Join(root, "home/alice/.ssh")))
	must(t, os.Symlink(filepath.Join(root, "rootssh"), filepath.Join(root, "tmp/ssh")))
	must(t, os.Symlink(filepath.Join(root, "rootssh"), filepath.Join(root, "shared/ssh")))
	must(t, os.Symlink("authorized_keys", filepath.Join(root, "rootssh/keys")))
	must(t, os.Chmod(filepath.Join(root, "tmp"), 0o1777))
	must(t, os.Chmod(filepath.Join(root, "shared"), 0o775))
	if os.Geteuid() == 0 {
		must(t, os.Chown(filepath.Join(root, "home/alice"), nobody, nobody))
		must(t, os.Lchown(filepath.Join(root, "home/alice/.ssh"), nobody, nobody))
		must(t, os.Chown(filepath.Join(root, "shared"), 0, nobody))
	}
	return root
}

func TestLinksOnlyRootCouldPlaceAreFollowed(t *testing.T) {
	root := tree(t)
	for _, tc := range []struct{ path, want string }{
		{"lib", "usr/lib"},
		{"lib/", "usr/lib"},
		{"varrun", "run"},
		{"lib/../rootssh", "rootssh"},
		{"usr/lib/../../lib", "usr/lib"},
	} {
		d, err := OpenDir(filepath.Join(root, tc.path), false)
		if err != nil {
			t.Errorf("%s: %v", tc.path, err)
			continue
		}
		if want := filepath.Join(root, tc.want); d.Path() != want {
			t.Errorf("%s: reached %s, want %s", tc.path, d.Path(), want)
		}
		var got, want syscall.Stat_t
		must(t, syscall.Fstat(d.Fd(), &got))
		must(t, syscall.Stat(filepath.Join(root, tc.want), &want))
		if got.Ino != want.Ino {
			t.Errorf("%s: the descriptor is not %s", tc.path, tc.want)
		}
		d.Close()
	}
	f, err := Open(filepath.Join(root, "rootssh/keys"), os.O_RDONLY)
	must(t, err)
	f.Close()
}

func TestLinksOthersCanWriteAreRefused(t *testing.T) {
	needRoot(t)
	root := tree(t)
	for _, tc := range []struct{ path, reason string }{
		{"home/alice/.ssh/authorized_keys", "is owned by uid 65534"},
		{"tmp/ssh/authorized_keys", "is writable by everyone"},
		{"shared/ssh/authorized_keys", "is writable by group 65534"},
	} {
		p := filepath.Join(root, tc.path)
		check := func(what string, err error) {
			var ue *UnsafeLinkError
			if !errors.As(err, &ue) {
				t.Errorf("%s %s: %v, want an UnsafeLinkError", what, tc.path, err)
				return
			}
			link := filepath.Join(root, filepath.Dir(filepath.Dir(tc.path)))
			if ue.Dir != link || !strings.Contains(err.Error(), tc.reason) || !strings.Contains(err.Error(), filepath.Dir(p)) {
				t.Errorf("%s %s: %q, want the link, %s and %q", what, tc.path, err, link, tc.reason)
			}
		}
		_, _, err := OpenParent(p, true)
		check("OpenParent", err)
		_, err = OpenDir(filepath.Dir(p), false)
		check("OpenDir", err)
		_, err = Open(p, os.O_RDONLY)
		check("Open", err)
	}
	// The last component too, with Open.
	must(t, os.Symlink(filepath.Join(root, "rootssh/authorized_keys"), filepath.Join(root, "home/alice/keys")))
	if _, err := Open(filepath.Join(root, "home/alice/keys"), os.O_RDONLY); !errors.As(err, new(*UnsafeLinkError)) {
		t.Errorf("Open of a link alice placed: %v", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(root, "rootssh")); len(entries) != 2 {
		t.Errorf("the decoy directory changed: %v", entries)
	}
}

func TestCreateAndLoops(t *testing.T) {
	root := tree(t)
	d, name, err := OpenParent(filepath.Join(root, "lib/new/deeper/file"), true)
	must(t, err)
	if name != "file" || d.Path() != filepath.Join(root, "usr/lib/new/deeper") {
		t.Fatalf("OpenParent: %s %s", d.Path(), name)
	}
	d.Close()
	if st, err := os.Stat(filepath.Join(root, "usr/lib/new/deeper")); err != nil || !st.IsDir() {
		t.Fatalf("not created: %v", err)
	}
	if _, err := OpenDir(filepath.Join(root, "missing/x"), false); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a missing directory without create: %v", err)
	}
	must(t, os.Symlink("b", filepath.Join(root, "a")))
	must(t, os.Symlink("a", filepath.Join(root, "b")))
	if _, err := OpenDir(filepath.Join(root, "a"), false); !errors.Is(err, syscall.ELOOP) {
		t.Errorf("a loop: %v", err)
	}
	if _, err := OpenDir(filepath.Join(root, "rootssh/authorized_keys"), false); !errors.Is(err, syscall.ENOTDIR) {
		t.Errorf("a file as a directory: %v", err)
	}
}

// Remove and MkdirAll, as a service's pidfile uses them: through a user's link they touch
// nothing; through a link only root could place they work.
func TestRemoveAndMkdirAllRefuseALinkAUserPlaced(t *testing.T) {
	needRoot(t)
	root := tree(t)
	keys := filepath.Join(root, "rootssh", "authorized_keys")
	var unsafe *UnsafeLinkError
	if err := Remove(filepath.Join(root, "home/alice/.ssh/authorized_keys")); !errors.As(err, &unsafe) {
		t.Errorf("Remove through alice's link: %v, want an UnsafeLinkError", err)
	}
	if _, err := os.Stat(keys); err != nil {
		t.Errorf("root's file after Remove through alice's link: %v", err)
	}
	if err := MkdirAll(filepath.Join(root, "home/alice/.ssh/new/dir")); !errors.As(err, &unsafe) {
		t.Errorf("MkdirAll through alice's link: %v, want an UnsafeLinkError", err)
	}
	if _, err := os.Stat(filepath.Join(root, "rootssh", "new")); !os.IsNotExist(err) {
		t.Errorf("MkdirAll through alice's link made a directory in root's: %v", err)
	}

	must(t, MkdirAll(filepath.Join(root, "lib/app/run")))
	pid := filepath.Join(root, "usr/lib/app/run/app.pid")
	must(t, os.WriteFile(pid, []byte("1\n"), 0o644))
	must(t, Remove(filepath.Join(root, "lib/app/run/app.pid")))
	if _, err := os.Stat(pid); !os.IsNotExist(err) {
		t.Errorf("Remove through lib -> usr/lib left the file: %v", err)
	}
	must(t, Remove(filepath.Join(root, "lib/app/run/app.pid"))) // missing: not an error
	must(t, Remove(filepath.Join(root, "lib/nodir/app.pid")))
}
