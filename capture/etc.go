package capture

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"unicode/utf8"
)

// DefaultExcludes are the paths under /etc a capture leaves out, as path.Match patterns on the
// absolute path; a pattern ending in "/" leaves out a whole directory. They are host identity,
// files generated from other state, databases handled elsewhere, and editor or dpkg leftovers.
var DefaultExcludes = []string{
	// Host identity and runtime state.
	"/etc/machine-id", "/etc/hostid", "/etc/adjtime", "/etc/mtab", "/etc/resolv.conf",
	"/etc/fstab", "/etc/crypttab", // disks differ between hosts: a wrong fstab stops the boot
	"/etc/ssh/ssh_host_*", // regenerated per host by openssh-server (see the README of a capture)
	"/etc/udev/rules.d/70-persistent-*",
	"/etc/lvm/archive/", "/etc/lvm/backup/",
	// Generated from other state.
	"/etc/ld.so.cache", "/etc/alternatives/", "/etc/ssl/certs/", "/etc/xml/", "/etc/sgml/",
	"/etc/ssl/private/ssl-cert-snakeoil.key", "/etc/rc?.d/", "/etc/rcS.d/", "/etc/.java/",
	"/etc/apparmor.d/cache/", "/etc/systemd/system/*.wants/", "/etc/systemd/user/*.wants/",
	"/etc/.pwd.lock", "/etc/security/opasswd",
	// Users and groups: captured as users, never as files (they hold password hashes).
	"/etc/passwd", "/etc/passwd-", "/etc/group", "/etc/group-", "/etc/shadow", "/etc/shadow-",
	"/etc/gshadow", "/etc/gshadow-", "/etc/subuid", "/etc/subuid-", "/etc/subgid", "/etc/subgid-",
	// brine's own configuration and keys: a host joins a master by enrolment, not by copy.
	"/etc/brine/",
	// ufw's own state: captured as the ufw block.
	"/etc/ufw/ufw.conf", "/etc/ufw/user.rules", "/etc/ufw/user6.rules", "/etc/default/ufw",
	// Leftovers.
	"*.dpkg-old", "*.dpkg-dist", "*.dpkg-new", "*.dpkg-bak", "*.dpkg-tmp", "*.ucf-old", "*.ucf-dist",
	"*.ucf-new", "*~", "*.swp", "*.bak", "*.old",
}

// etcFile is one file under /etc that goes into the capture.
type etcFile struct {
	path   string
	reason string // why it is captured: "changed conffile of nginx", "not owned by a package"
	data   []byte
	mode   fs.FileMode
	owner  string
	group  string
	pkg    string // the package that ships it, for a changed conffile
	secret string // non-empty: a secret (why), whose content is never read into the capture
	link   string // a symlink's target (then data is empty)
}

// excluded reports whether p (absolute) matches one of the patterns.
func excluded(p string, isDir bool, patterns []string) bool {
	for _, pat := range patterns {
		if strings.HasSuffix(pat, "/") {
			if isDir {
				if ok, _ := path.Match(strings.TrimSuffix(pat, "/"), p); ok {
					return true
				}
			}
			continue
		}
		target := p
		if !strings.HasPrefix(pat, "/") {
			target = path.Base(p)
		}
		if ok, _ := path.Match(pat, target); ok {
			return true
		}
	}
	return false
}

// secretReason says why a file is a secret whose bytes must never be copied, or "". It looks at
// the name first and, when the name says nothing, at the content (head is the start of it, or
// all of it).
func secretReason(p string, head []byte) string {
	base := path.Base(p)
	switch {
	case strings.HasSuffix(base, ".key"):
		return "a key file (*.key)"
	case base == "rsa_key.priv" || base == "ed25519_key.priv":
		return "a tinc private key"
	case strings.HasPrefix(base, "ssh_host_") && !strings.HasSuffix(base, ".pub"):
		return "an SSH host key"
	case strings.HasPrefix(p, "/etc/ssl/private/"):
		return "a file of /etc/ssl/private"
	case base == "id_rsa" || base == "id_dsa" || base == "id_ecdsa" || base == "id_ed25519":
		return "an SSH private key"
	}
	for _, ext := range []string{".p12", ".pfx", ".jks", ".keystore"} {
		if strings.HasSuffix(base, ext) {
			return "a key store (" + ext + ")"
		}
	}
	for _, marker := range [][]byte{[]byte("PRIVATE KEY-----"), []byte("PRIVATE KEY BLOCK-----"), []byte("PuTTY-User-Key-File")} {
		if bytes.Contains(head, marker) {
			return "it holds a private key"
		}
	}
	return ""
}

// isText reports whether data can be a template: UTF-8 without NUL bytes.
func isText(data []byte) bool {
	return utf8.Valid(data) && bytes.IndexByte(data, 0) < 0
}

// walkEtc finds the files of /etc (under root) that a capture keeps: changed conffiles, files
// no package owns (except copies of shipped files and what the excludes name), secrets as
// references. Skipped files of note go to notes.
func (c *capturer) walkEtc() ([]etcFile, error) {
	var out []etcFile
	etc := filepath.Join(c.root, "etc")
	err := filepath.WalkDir(etc, func(full string, d fs.DirEntry, err error) error {
		if err != nil {
			if full == etc {
				return err
			}
			c.note("%s: not readable: %v", c.hostPath(full), err)
			return nil
		}
		p := c.hostPath(full)
		if d.IsDir() {
			if full != etc && excluded(p, true, c.excludes) {
				return filepath.SkipDir
			}
			return nil
		}
		if excluded(p, false, c.excludes) {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		if info.Mode()&fs.ModeSymlink != 0 {
			if _, owned := c.db.owned[p]; owned || strings.HasPrefix(p, "/etc/systemd/") {
				return nil // systemd's links are enablement: the services say it
			}
			target, err := os.Readlink(full)
			if err != nil {
				return nil
			}
			out = append(out, etcFile{path: p, reason: "a symlink no package owns", link: target})
			return nil
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		cf, isConf := c.db.conffiles[p]
		_, owned := c.db.owned[p]
		if owned && !isConf {
			return nil // shipped as is; dpkg --verify would say whether it changed, not our business
		}
		if isConf && cf.obsolete {
			return nil
		}
		f := etcFile{path: p, mode: info.Mode().Perm() | info.Mode()&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)}
		f.owner, f.group = c.ids.names(info)
		if why := secretReason(p, nil); why != "" {
			f.secret, f.reason = why, "secret"
			out = append(out, f)
			return nil
		}
		if info.Size() > c.opts.MaxFileSize {
			// Not read at all: the capture holds no byte of it (it might even be a key bundle).
			c.note("%s: %d bytes, over the size cap of %d: not captured", p, info.Size(), c.opts.MaxFileSize)
			return nil
		}
		data, err := os.ReadFile(full)
		if err != nil {
			c.note("%s: not readable: %v", p, err)
			return nil
		}
		if why := secretReason(p, data); why != "" {
			f.secret, f.reason = why, "secret"
			out = append(out, f)
			return nil
		}
		sum := md5Hex(data)
		switch {
		case isConf:
			if sum == cf.md5 {
				return nil
			}
			f.reason, f.pkg = "changed conffile of "+cf.pkg, cf.pkg
		case c.db.ucf[p] != "":
			if sum == c.db.ucf[p] {
				return nil
			}
			f.reason = "changed configuration file (ucf)"
		default:
			if c.db.shipped[sum] {
				return nil // a pristine copy of a file some package ships
			}
			f.reason = "not owned by any package"
		}
		f.data = data
		out = append(out, f)
		if len(out) > c.opts.MaxFiles {
			return fmt.Errorf("more than %d files under /etc to capture: raise --max-files or add excludes", c.opts.MaxFiles)
		}
		return nil
	})
	return out, err
}
