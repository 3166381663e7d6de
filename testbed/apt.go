package testbed

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
)

// TestPackage describes a tiny Debian package for a test apt repository.
type TestPackage struct {
	Name    string
	Version string
	// Depends is the Depends field, e.g. "brine-lib (>= 1.0)".
	Depends string
	// Description is one line; a default is made from the name.
	Description string
	// Postinst, when set, is the body of the package's postinst script
	// (run by /bin/sh -e).
	Postinst string
	// Files maps absolute paths to contents; none means one file,
	// /usr/share/<name>/VERSION, holding the version. Files under /etc/ are
	// conffiles, as debhelper makes them.
	Files map[string]string
}

// DefaultTestPackages returns the packages the brine tests install:
// brine-hello 1.0 and 2.0, brine-lib 1.0, brine-app-dep 1.0 (depends on
// brine-lib), brine-badpost 1.0 (its postinst fails), and brine-proxy,
// brine-blog and brine-db 1.0 for the reference deployment, and brine-conf 1.0,
// whose /etc/brine-conf/brine-conf.conf is a conffile.
func DefaultTestPackages() []TestPackage {
	return []TestPackage{
		{Name: "brine-conf", Version: "1.0", Files: map[string]string{
			"/etc/brine-conf/brine-conf.conf": "# brine-conf: a package with a conffile, for brine's tests\nlisten = 127.0.0.1\n",
			"/usr/share/brine-conf/VERSION":   "1.0\n"}},
		{Name: "brine-hello", Version: "1.0"},
		{Name: "brine-hello", Version: "2.0"},
		{Name: "brine-lib", Version: "1.0"},
		{Name: "brine-app-dep", Version: "1.0", Depends: "brine-lib"},
		{Name: "brine-badpost", Version: "1.0",
			Postinst: "echo 'brine-badpost: postinst refused' >&2\nexit 1\n"},
		listenerPackage("brine-proxy", "the web cache/proxy"),
		listenerPackage("brine-blog", "the blog application"),
		listenerPackage("brine-db", "the database"),
	}
}

// listenerPackage is a stand-in for a server of the reference deployment: /usr/sbin/NAME reads
// LISTEN and PORT from /etc/NAME/NAME.env, waits until LISTEN is an address of the host (a mesh
// address comes up with tincd), and answers every TCP connection with one line naming itself
// and the host, with netcat (netcat-openbsd).
func listenerPackage(name, what string) TestPackage {
	script := `#!/bin/sh
# ` + name + `: a stand-in for ` + what + ` in brine's tests and demo.
set -u
. /etc/` + name + `/` + name + `.env
if [ "$LISTEN" != 0.0.0.0 ]; then
  i=0
  until ip -o addr show | grep -q " $LISTEN/"; do
    i=$((i + 1)); [ "$i" -gt 300 ] && { echo "` + name + `: no address $LISTEN" >&2; exit 1; }
    sleep 0.1
  done
fi
echo "` + name + `: listening on $LISTEN:$PORT"
while :; do
  echo "` + name + ` on $(hostname)" | nc -l -s "$LISTEN" -p "$PORT" -q 0 >/dev/null 2>&1 || sleep 0.2
done
`
	return TestPackage{Name: name, Version: "1.0", Description: "brine test stand-in for " + what,
		Files: map[string]string{"/usr/sbin/" + name: script, "/usr/share/" + name + "/VERSION": "1.0\n"}}
}

// BuildAptRepo builds pkgs with dpkg-deb into dir (created if needed) and
// indexes them as a flat repository (Packages, Packages.gz-free, Release),
// usable as `deb [trusted=yes] file:DIR ./`.
func BuildAptRepo(dir string, pkgs []TestPackage) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("apt repo: %w", err)
	}
	// apt reads file: repositories as the unprivileged _apt user.
	if err := os.Chmod(dir, 0o755); err != nil {
		return fmt.Errorf("apt repo: %w", err)
	}
	build, err := os.MkdirTemp("", "brine-debs-")
	if err != nil {
		return fmt.Errorf("apt repo: %w", err)
	}
	defer os.RemoveAll(build)
	var g errgroup.Group
	g.SetLimit(4)
	for i, p := range pkgs {
		g.Go(func() error { return buildDeb(filepath.Join(build, fmt.Sprint(i)), dir, p) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	cmd := exec.Command("dpkg-scanpackages", "--multiversion", ".", "/dev/null")
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("apt repo: dpkg-scanpackages: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "Packages"), out, 0o644); err != nil {
		return fmt.Errorf("apt repo: %w", err)
	}
	md, sh := md5.Sum(out), sha256.Sum256(out)
	release := fmt.Sprintf("Origin: brine-testbed\nLabel: brine-testbed\nSuite: testbed\nCodename: testbed\nDate: %s\nArchitectures: all amd64 arm64\nMD5Sum:\n %s %d Packages\nSHA256:\n %s %d Packages\n",
		time.Now().UTC().Format(time.RFC1123Z), hex.EncodeToString(md[:]), len(out), hex.EncodeToString(sh[:]), len(out))
	if err := os.WriteFile(filepath.Join(dir, "Release"), []byte(release), 0o644); err != nil {
		return fmt.Errorf("apt repo: %w", err)
	}
	return nil
}

func buildDeb(root, repo string, p TestPackage) error {
	if p.Name == "" || p.Version == "" {
		return fmt.Errorf("apt repo: package needs a name and a version: %+v", p)
	}
	files := p.Files
	if len(files) == 0 {
		files = map[string]string{"/usr/share/" + p.Name + "/VERSION": p.Version + "\n"}
	}
	var conffiles []string
	for path, content := range files {
		if strings.HasPrefix(filepath.Clean("/"+path), "/etc/") {
			conffiles = append(conffiles, filepath.Clean("/"+path))
		}
		full := filepath.Join(root, filepath.Clean("/"+path))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if strings.Contains(path, "/bin/") || strings.Contains(path, "/sbin/") {
			mode = 0o755
		}
		if err := os.WriteFile(full, []byte(content), mode); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Join(root, "DEBIAN"), 0o755); err != nil {
		return err
	}
	desc := p.Description
	if desc == "" {
		desc = "brine testbed package " + p.Name
	}
	control := fmt.Sprintf("Package: %s\nVersion: %s\nArchitecture: all\nMaintainer: brine testbed <testbed@brine.invalid>\nPriority: optional\nSection: misc\n", p.Name, p.Version)
	if p.Depends != "" {
		control += "Depends: " + p.Depends + "\n"
	}
	control += "Description: " + desc + "\n"
	if err := os.WriteFile(filepath.Join(root, "DEBIAN/control"), []byte(control), 0o644); err != nil {
		return err
	}
	if len(conffiles) > 0 {
		sort.Strings(conffiles)
		if err := os.WriteFile(filepath.Join(root, "DEBIAN/conffiles"), []byte(strings.Join(conffiles, "\n")+"\n"), 0o644); err != nil {
			return err
		}
	}
	if p.Postinst != "" {
		script := "#!/bin/sh\nset -e\n" + p.Postinst
		if err := os.WriteFile(filepath.Join(root, "DEBIAN/postinst"), []byte(script), 0o755); err != nil {
			return err
		}
	}
	deb := filepath.Join(repo, fmt.Sprintf("%s_%s_all.deb", p.Name, p.Version))
	out, err := exec.Command("dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "--build", root, deb).CombinedOutput()
	if err != nil {
		return fmt.Errorf("apt repo: dpkg-deb %s %s: %v: %s", p.Name, p.Version, err, trimOut(out))
	}
	return nil
}

var (
	defaultRepoOnce sync.Once
	defaultRepoDir  string
	defaultRepoErr  error
)

// DefaultAptRepo builds DefaultTestPackages and returns the repository's directory. The
// repository is shared by every process on the machine and kept: it lives under
// os.TempDir()/brine-apt-<digest of the package list>, so a changed list gets a new one, and a
// test run leaves no new directory behind. A process builds it into a private directory and
// renames it into place, so concurrent builders never see half a repository.
func DefaultAptRepo() (string, error) {
	defaultRepoOnce.Do(func() {
		defaultRepoDir, defaultRepoErr = sharedAptRepo(DefaultTestPackages())
	})
	return defaultRepoDir, defaultRepoErr
}

func sharedAptRepo(pkgs []TestPackage) (string, error) {
	spec, err := json.Marshal(pkgs)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(spec)
	dir := filepath.Join(os.TempDir(), "brine-apt-"+hex.EncodeToString(sum[:8]))
	if _, err := os.Stat(filepath.Join(dir, "Release")); err == nil {
		return dir, nil
	}
	tmp, err := os.MkdirTemp(os.TempDir(), ".brine-apt-build-")
	if err != nil {
		return "", err
	}
	if err := BuildAptRepo(tmp, pkgs); err != nil {
		os.RemoveAll(tmp)
		return "", err
	}
	if err := os.Rename(tmp, dir); err != nil {
		os.RemoveAll(tmp) // another process won the race; its repository is the same
		if _, serr := os.Stat(filepath.Join(dir, "Release")); serr != nil {
			return "", fmt.Errorf("apt repo: %w", err)
		}
	}
	return dir, nil
}

// AptSource is the apt source line that EnableApt installs in every host.
const AptSource = "deb [trusted=yes] file:" + HostAptDir + " ./\n"

// EnableApt makes the apt repository in repoDir (DefaultAptRepo if empty)
// the only apt source of every host, mounted read-only at /srv/brine-apt,
// and runs apt-get update in every host, so that apt-get install works with
// no network. Hosts added later (AddHost) get the same.
func (c *Cluster) EnableApt(ctx context.Context, repoDir string) error {
	if repoDir == "" {
		var err error
		if repoDir, err = DefaultAptRepo(); err != nil {
			return err
		}
	}
	// Every host already has <dir>/apt bind-mounted: fill it.
	dst := filepath.Join(c.st.Dir, "apt")
	if err := copyFlat(repoDir, dst); err != nil {
		return fmt.Errorf("testbed: enable apt: %w", err)
	}
	c.mu.Lock()
	c.st.Apt = true
	err := c.saveLocked()
	c.mu.Unlock()
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, h := range c.Hosts() {
		g.Go(func() error { return h.enableApt(gctx) })
	}
	return g.Wait()
}

// enableApt installs the testbed apt source in the host and runs apt-get update.
func (h *Host) enableApt(ctx context.Context) error {
	list := filepath.Join(h.Root(), "etc/apt/sources.list.d/brine-testbed.list")
	if err := os.WriteFile(list, []byte(AptSource), 0o644); err != nil {
		return fmt.Errorf("testbed: enable apt on %s: %w", h.Name(), err)
	}
	out, code, err := h.Sh(ctx, "apt-get -q update")
	if err != nil {
		return err
	}
	if code != 0 || strings.Contains(out, "W: ") || strings.Contains(out, "E: ") {
		return fmt.Errorf("testbed: apt-get update on %s: exit %d: %s", h.Name(), code, trimOut([]byte(out)))
	}
	return nil
}

// copyFlat copies the regular files of src into dst, replacing what dst held.
func copyFlat(src, dst string) error {
	old, _ := os.ReadDir(dst)
	for _, e := range old {
		os.RemoveAll(filepath.Join(dst, e.Name()))
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].Name() < ents[j].Name() })
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		in, err := os.Open(filepath.Join(src, e.Name()))
		if err != nil {
			return err
		}
		out, err := os.OpenFile(filepath.Join(dst, e.Name()), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
		if err != nil {
			in.Close()
			return err
		}
		_, err = io.Copy(out, in)
		in.Close()
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	return nil
}
