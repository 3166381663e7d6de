package states

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// Size limits of a bundle, so that neither a CLI nor a minion can be made to hold an unbounded one.
const (
	MaxBundleFiles = 10000
	MaxBundleBytes = 64 << 20
	// MaxResources bounds the resources one bundle compiles to on one host (for_each instances
	// included): the master compiles every bundle for every target, so it is a bound on its work.
	MaxResources = 10000
)

// Bundle is a state bundle in memory: every regular file under its root, keyed by slash-separated
// path relative to the root. It is what travels inside a job, so a minion never reads the master's
// disk and no path in it can name anything outside the bundle.
type Bundle struct {
	Files map[string][]byte

	// Root is the directory the bundle was read from, used only to name files in diagnostics.
	Root string
	// escaping remembers the files that ReadBundle left out because they may reach outside the
	// root (symlinks pointing out, hard links), with the reason, so that file() and the parser
	// can say why instead of "no such file". Not part of the packed bundle.
	escaping map[string]string
}

// ReadBundle reads every regular file under dir into a Bundle. Symlinks are followed only when
// they resolve inside dir; hidden files and directories (".git") are skipped. A file with more
// than one hard link is left out unless all its links are inside dir: the other name of a hard
// link may be anywhere on the file system (/etc/shadow linked into a bundle would travel to
// every minion), and unlike a symlink nothing says where.
func ReadBundle(dir string) (*Bundle, error) {
	root, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	root, err = filepath.EvalSymlinks(root)
	if err != nil {
		return nil, fmt.Errorf("read bundle: %w", err)
	}
	st, err := os.Stat(root)
	if err != nil {
		return nil, fmt.Errorf("read bundle: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("read bundle: %s is not a directory", dir)
	}
	b := &Bundle{Files: map[string][]byte{}, Root: dir, escaping: map[string]string{}}
	var total int64
	type inode struct{ dev, ino uint64 }
	type linked struct {
		nlink  uint64
		direct uint64   // names that are the file itself, not a symlink to it
		names  []string // every name in the bundle, symlinks included
	}
	links := map[inode]*linked{}
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != root && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		real := p
		if d.Type()&fs.ModeSymlink != 0 {
			real, err = filepath.EvalSymlinks(p)
			if err != nil || !within(root, real) {
				// An escaping symlink is left out; file() and templatefile() name it in a diagnostic.
				rel, _ := filepath.Rel(root, p)
				target, _ := os.Readlink(p)
				b.escaping[filepath.ToSlash(rel)] = fmt.Sprintf("is a symlink to %s, outside the bundle root", target)
				return nil
			}
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if len(b.Files) >= MaxBundleFiles {
			return fmt.Errorf("read bundle: more than %d files", MaxBundleFiles)
		}
		// Opened without following a symlink swapped in since the walk, and without blocking on
		// a FIFO; what is checked (regular, links, size) is what is read.
		f, err := os.OpenFile(real, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
		if err != nil {
			return nil // not a readable regular file (a socket, a FIFO, a vanished entry)
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil || !fi.Mode().IsRegular() {
			return nil
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 {
			key := inode{dev: uint64(st.Dev), ino: st.Ino}
			if links[key] == nil {
				links[key] = &linked{nlink: uint64(st.Nlink)}
			}
			links[key].names = append(links[key].names, rel)
			if real == p {
				links[key].direct++
			}
		}
		total += fi.Size()
		if total > MaxBundleBytes {
			return fmt.Errorf("read bundle: larger than %d bytes", MaxBundleBytes)
		}
		data, err := io.ReadAll(io.LimitReader(f, MaxBundleBytes-total+fi.Size()+1))
		if err != nil {
			return err
		}
		if int64(len(data)) > fi.Size() {
			return fmt.Errorf("read bundle: %s grew while it was read", rel)
		}
		b.Files[rel] = data
		return nil
	})
	if err != nil {
		return nil, err
	}
	// A hard link is fine when every one of its names is in the bundle.
	for _, l := range links {
		if l.direct >= l.nlink {
			continue
		}
		for _, n := range l.names {
			delete(b.Files, n)
			b.escaping[n] = fmt.Sprintf("is a hard link (%d links) to a file that may be outside the bundle root", l.nlink)
		}
	}
	return b, nil
}

func within(root, p string) bool {
	rel, err := filepath.Rel(root, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../") && !filepath.IsAbs(rel)
}

// names returns the bundle's paths in sorted order.
func (b *Bundle) names() []string {
	ns := make([]string, 0, len(b.Files))
	for n := range b.Files {
		ns = append(ns, n)
	}
	sort.Strings(ns)
	return ns
}

// Marshal packs the bundle as a deterministic tar stream (sorted names, zero times), so that the
// same files always give the same bytes and the same Digest.
func (b *Bundle) Marshal() []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range b.names() {
		data := b.Files[n]
		_ = tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(data)), ModTime: time.Unix(0, 0), Format: tar.FormatPAX})
		_, _ = tw.Write(data)
	}
	_ = tw.Close()
	return buf.Bytes()
}

// UnmarshalBundle reads a bundle packed by Marshal. It refuses absolute paths, "..", non-regular
// entries and anything over the size limits: the input may come from the network.
func UnmarshalBundle(data []byte) (*Bundle, error) {
	if len(data) > MaxBundleBytes+MaxBundleFiles*1024 {
		return nil, errors.New("bundle: too large")
	}
	b := &Bundle{Files: map[string][]byte{}}
	tr := tar.NewReader(bytes.NewReader(data))
	var total int64
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return nil, fmt.Errorf("bundle: %w", err)
		}
		if h.Typeflag != tar.TypeReg {
			return nil, fmt.Errorf("bundle: %q is not a regular file", h.Name)
		}
		if !validBundlePath(h.Name) {
			return nil, fmt.Errorf("bundle: invalid path %q", h.Name)
		}
		if len(b.Files) >= MaxBundleFiles {
			return nil, fmt.Errorf("bundle: more than %d files", MaxBundleFiles)
		}
		if h.Size < 0 || total+h.Size > MaxBundleBytes {
			return nil, errors.New("bundle: too large")
		}
		total += h.Size
		content, err := io.ReadAll(io.LimitReader(tr, h.Size))
		if err != nil {
			return nil, fmt.Errorf("bundle: %w", err)
		}
		if _, dup := b.Files[h.Name]; dup {
			return nil, fmt.Errorf("bundle: duplicate path %q", h.Name)
		}
		b.Files[h.Name] = content
	}
}

func validBundlePath(p string) bool {
	if p == "" || strings.HasPrefix(p, "/") || strings.ContainsRune(p, 0) || strings.Contains(p, "\\") {
		return false
	}
	if path.Clean(p) != p {
		return false
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == ".." || seg == "." || seg == "" {
			return false
		}
	}
	return true
}

// Packed is a bundle packed once for the wire: the bytes that travel in a job (Marshal) and
// their digest, which the job's signature covers.
type Packed struct {
	Bytes  []byte
	Digest string // hex sha256 of Bytes
}

// Pack packs b and digests what it packed.
func (b *Bundle) Pack() Packed {
	data := b.Marshal()
	sum := sha256.Sum256(data)
	return Packed{Bytes: data, Digest: hex.EncodeToString(sum[:])}
}

// Digest is the hex sha256 of the packed bundle (Pack, when the bytes are needed too).
func (b *Bundle) Digest() string { return b.Pack().Digest }
