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
	"time"
)

// Size limits of a bundle, so that neither a CLI nor a minion can be made to hold an unbounded one.
const (
	MaxBundleFiles = 10000
	MaxBundleBytes = 64 << 20
)

// Bundle is a state bundle in memory: every regular file under its root, keyed by slash-separated
// path relative to the root. It is what travels inside a job, so a minion never reads the master's
// disk and no path in it can name anything outside the bundle.
type Bundle struct {
	Files map[string][]byte

	// Root is the directory the bundle was read from, used only to name files in diagnostics.
	Root string
	// escaping remembers symlinks that ReadBundle left out because they point outside the root,
	// so that file() can say why instead of "no such file". Not part of the packed bundle.
	escaping map[string]string
}

// ReadBundle reads every regular file under dir into a Bundle. Symlinks are followed only when
// they resolve inside dir; hidden files and directories (".git") are skipped.
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
				b.escaping[filepath.ToSlash(rel)] = target
				return nil
			}
		}
		fi, err := os.Stat(real)
		if err != nil || !fi.Mode().IsRegular() {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		if len(b.Files) >= MaxBundleFiles {
			return fmt.Errorf("read bundle: more than %d files", MaxBundleFiles)
		}
		total += fi.Size()
		if total > MaxBundleBytes {
			return fmt.Errorf("read bundle: larger than %d bytes", MaxBundleBytes)
		}
		data, err := os.ReadFile(real)
		if err != nil {
			return err
		}
		b.Files[filepath.ToSlash(rel)] = data
		return nil
	})
	if err != nil {
		return nil, err
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

// Digest is the hex sha256 of the packed bundle.
func (b *Bundle) Digest() string {
	sum := sha256.Sum256(b.Marshal())
	return hex.EncodeToString(sum[:])
}
