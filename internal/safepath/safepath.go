// Package safepath opens directories and files for a process that runs as root but writes into
// places other users can write (a home directory, a service's data directory), so that such a
// user cannot redirect it with a symbolic link. A path is walked component by component from "/"
// (or the working directory for a relative path), each component opened without following a
// link. A symbolic link is followed only when the directory that holds it is owned by root (or by
// the user this process runs as) and writable by neither its group nor others: only such an owner
// could have put it there. This keeps the links a system is built with (/lib -> usr/lib,
// /var/run -> /run) working, and refuses one a user planted, like the kernel's
// protected_symlinks does for sticky directories. The caller then works relative to the
// directory it got (openat, mkdirat, renameat, unlinkat), which a later rename or link of the
// path cannot move.
package safepath

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// maxLinks bounds the symbolic links followed in one path (the kernel's own limit is 40).
const maxLinks = 40

// UnsafeLinkError reports a symbolic link in a directory that a user other than root can write.
type UnsafeLinkError struct {
	Link   string // the link's path
	Dir    string // the directory that holds it
	Reason string // why others can write Dir: "is owned by uid 1000 (alice)", "is writable by everyone"
}

func (e *UnsafeLinkError) Error() string {
	return fmt.Sprintf("refusing to follow the symbolic link %s: the directory that holds it, %s, %s "+
		"(links are followed only in directories that only root can write)", e.Link, e.Dir, e.Reason)
}

// Dir is a directory opened with O_PATH: it can be used as the base of the *at calls, not read.
type Dir struct {
	fd   int
	path string
}

// Fd is the directory's descriptor, valid until Close.
func (d *Dir) Fd() int { return d.fd }

// Path is the directory's path with the links followed to reach it resolved.
func (d *Dir) Path() string { return d.path }

// Close releases the descriptor.
func (d *Dir) Close() error { return unix.Close(d.fd) }

// Join is the path of name in d, for messages.
func (d *Dir) Join(name string) string { return filepath.Join(d.path, name) }

// OpenDir opens the directory path. With create, it makes the directories that are missing
// (mode 0755 before the umask), each inside the one opened before it.
func OpenDir(path string, create bool) (*Dir, error) {
	d, err := start(path)
	if err != nil {
		return nil, err
	}
	var w walker
	if err := w.walk(d, split(path), create); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// OpenParent opens the directory that holds path's last component, and returns that component.
// With create, it makes the directories that are missing. The last component itself is not
// looked at: it may be missing, a link or anything else.
func OpenParent(path string, create bool) (*Dir, string, error) {
	dir, base := filepath.Split(path)
	if base == "" || base == "." || base == ".." {
		return nil, "", &fs.PathError{Op: "open", Path: path, Err: unix.EINVAL}
	}
	if dir == "" {
		dir = "."
	}
	d, err := OpenDir(dir, create)
	if err != nil {
		return nil, "", err
	}
	return d, base, nil
}

// Remove removes the file path (not a directory) from the directory reached under the rule
// above; a missing file is not an error.
func Remove(path string) error {
	d, name, err := OpenParent(path, false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer d.Close()
	if err := unix.Unlinkat(d.fd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return &fs.PathError{Op: "remove", Path: d.Join(name), Err: err}
	}
	return nil
}

// MkdirAll makes the directory path and the missing ones above it, each inside the one reached
// before it under the rule above.
func MkdirAll(path string) error {
	d, err := OpenDir(path, true)
	if err != nil {
		return err
	}
	return d.Close()
}

// Open opens path with flag (O_NOFOLLOW is added), following a link as its last component under
// the same rule as the others.
func Open(path string, flag int) (*os.File, error) {
	d, name, err := OpenParent(path, false)
	if err != nil {
		return nil, err
	}
	defer func() { d.Close() }()
	var w walker
	for {
		fd, err := unix.Openat(d.fd, name, flag|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err == nil {
			return os.NewFile(uintptr(fd), d.Join(name)), nil
		}
		if !errors.Is(err, unix.ELOOP) && !(errors.Is(err, unix.ENOTDIR) && flag&unix.O_DIRECTORY != 0) {
			return nil, &fs.PathError{Op: "open", Path: d.Join(name), Err: err}
		}
		target, isLink, lerr := w.link(d, name)
		if lerr != nil {
			return nil, lerr
		}
		if !isLink {
			return nil, &fs.PathError{Op: "open", Path: d.Join(name), Err: err}
		}
		if filepath.IsAbs(target) {
			root, err := start("/")
			if err != nil {
				return nil, err
			}
			d.replace(root.fd, "/")
		}
		tdir, tname := filepath.Split(target)
		if err := w.walk(d, split(tdir), false); err != nil {
			return nil, err
		}
		if tname == "" || tname == "." || tname == ".." {
			if err := w.walk(d, []string{tname}, false); err != nil {
				return nil, err
			}
			tname = "."
		}
		name = tname
	}
}

// start opens "/" for an absolute path, the working directory for a relative one.
func start(path string) (*Dir, error) {
	at := "/"
	if !filepath.IsAbs(path) {
		at = "."
	}
	fd, err := unix.Open(at, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: at, Err: err}
	}
	return &Dir{fd: fd, path: at}, nil
}

func split(path string) []string {
	return strings.Split(filepath.ToSlash(path), "/")
}

// walker follows links through one resolution, counting them.
type walker struct{ links int }

// walk moves d down the components elems, following the links it may (a link with an absolute
// target restarts d at "/"). On error d is still open, at some directory on the way.
func (w *walker) walk(d *Dir, elems []string, create bool) error {
	for len(elems) > 0 {
		name := elems[0]
		elems = elems[1:]
		switch name {
		case "", ".":
			continue
		case "..":
			fd, err := unix.Openat(d.fd, "..", unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				return &fs.PathError{Op: "open", Path: d.Join(".."), Err: err}
			}
			d.replace(fd, filepath.Dir(d.path))
			continue
		}
		fd, err := unix.Openat(d.fd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) && create {
			if err := unix.Mkdirat(d.fd, name, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
				return &fs.PathError{Op: "mkdir", Path: d.Join(name), Err: err}
			}
			fd, err = unix.Openat(d.fd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		}
		if err != nil {
			return &fs.PathError{Op: "open", Path: d.Join(name), Err: err}
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			return &fs.PathError{Op: "stat", Path: d.Join(name), Err: err}
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			d.replace(fd, d.Join(name))
		case unix.S_IFLNK:
			target, err := w.readLink(d, name, fd)
			unix.Close(fd)
			if err != nil {
				return err
			}
			if filepath.IsAbs(target) {
				root, err := start("/")
				if err != nil {
					return err
				}
				d.replace(root.fd, "/")
			}
			elems = append(split(target), elems...)
		default:
			unix.Close(fd)
			return &fs.PathError{Op: "open", Path: d.Join(name), Err: unix.ENOTDIR}
		}
	}
	return nil
}

// link returns the target of name in d when it is a link that may be followed; isLink is false
// when name is not a link.
func (w *walker) link(d *Dir, name string) (target string, isLink bool, err error) {
	fd, err := unix.Openat(d.fd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", false, &fs.PathError{Op: "open", Path: d.Join(name), Err: err}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return "", false, &fs.PathError{Op: "stat", Path: d.Join(name), Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFLNK {
		return "", false, nil
	}
	target, err = w.readLink(d, name, fd)
	return target, err == nil, err
}

// readLink checks that the link name in d (opened as fd) may be followed and returns its target.
func (w *walker) readLink(d *Dir, name string, fd int) (string, error) {
	if err := trusted(d, name); err != nil {
		return "", err
	}
	w.links++
	if w.links > maxLinks {
		return "", &fs.PathError{Op: "open", Path: d.Join(name), Err: unix.ELOOP}
	}
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(fd, "", buf)
	if err != nil {
		return "", &fs.PathError{Op: "readlink", Path: d.Join(name), Err: err}
	}
	if n == len(buf) {
		return "", &fs.PathError{Op: "readlink", Path: d.Join(name), Err: unix.ENAMETOOLONG}
	}
	return string(buf[:n]), nil
}

// trusted returns an UnsafeLinkError when a user other than root (and this process's) can write
// d, which holds the link name.
func trusted(d *Dir, name string) error {
	var st unix.Stat_t
	if err := unix.Fstat(d.fd, &st); err != nil {
		return &fs.PathError{Op: "stat", Path: d.path, Err: err}
	}
	var who string
	switch {
	case st.Uid != 0 && int(st.Uid) != os.Geteuid():
		who = "is owned by uid " + strconv.Itoa(int(st.Uid))
		if u, err := user.LookupId(strconv.Itoa(int(st.Uid))); err == nil {
			who += " (" + u.Username + ")"
		}
	case st.Mode&0o002 != 0:
		who = "is writable by everyone"
	case st.Mode&0o020 != 0:
		who = "is writable by group " + strconv.Itoa(int(st.Gid))
		if g, err := user.LookupGroupId(strconv.Itoa(int(st.Gid))); err == nil {
			who += " (" + g.Name + ")"
		}
	default:
		return nil
	}
	return &UnsafeLinkError{Link: d.Join(name), Dir: d.path, Reason: who}
}

func (d *Dir) replace(fd int, path string) {
	unix.Close(d.fd)
	d.fd, d.path = fd, path
}
