// Package atomicfile replaces files so that a reader, or the host after a crash, sees either the
// old content or the new, never a half-written file. It is the one way brine writes a file it
// keeps (keys, the key store, a minion's state) or manages (a file resource, a pidfile).
//
// One file costs two fsyncs (its data, then its directory after the rename). A Batch replaces
// many files for about the price of one: it writes every temporary file first, syncs them all
// at once (in parallel, so the filesystem commits them in one or a few journal transactions),
// renames each over its path, then syncs each directory it touched once.
//
// A temporary file is named .NAME.brine-DIGITS, beside NAME, and its writer holds an flock on it
// until it is renamed or removed. A writer killed in between leaves it behind, unlocked: the next
// write into that directory removes such files (see Stale).
//
// Brine writes as root into directories other users may own. A path's directory is opened with
// safepath (a symbolic link on the way is followed only where only root could have put it), and
// the temporary file is created, chmod, chown, renamed and removed relative to that directory,
// never by its path again: a user who can write a directory on the path cannot send the write
// elsewhere.
package atomicfile

import (
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/brinecm/brine/internal/safepath"
	"golang.org/x/sys/unix"
)

// Write replaces path with data and mode. An existing file keeps its owner.
func Write(path string, data []byte, mode os.FileMode) error {
	return WriteOwned(path, data, mode, -1, -1)
}

// WriteOwned replaces path with data, mode and owner: a temporary file in the same directory
// (made when missing), written, chmod and chown, synced, renamed over path, then the directory
// synced. uid or gid -1 keeps the current owner (or the writer's for a new file).
//
// The directory is reached with safepath: a symbolic link on the way is followed only when the
// directory holding it is one only root can write, and everything after is done relative to the
// directory reached, so a user who can write a directory on the path cannot redirect the write.
func WriteOwned(path string, data []byte, mode os.FileMode, uid, gid int) error {
	var b Batch
	if err := b.Stage(path, data, mode, uid, gid); err != nil {
		return err
	}
	return b.Commit()[0]
}

// Batch group-commits file replacements. Stage writes each new content to a temporary file
// beside its path; Commit makes them durable together and puts them in place. Until Commit no
// path has changed. A Batch is for one goroutine; the zero value is ready to use.
type Batch struct {
	items []*staged
	swept map[string]bool          // directories cleared of stale temporary files
	dirs  map[string]*safepath.Dir // directories of the staged files, open until Commit (at most maxOpen)
}

type staged struct {
	path     string   // as given to Stage
	dir      string   // filepath.Dir(path)
	name     string   // filepath.Base(path)
	tmp      string   // the temporary file's name in dir
	f        *os.File // open until synced
	dev, ino uint64   // the temporary file's identity
	err      error
}

// Len is the number of staged files not yet committed.
func (b *Batch) Len() int { return len(b.items) }

// Pending reports whether path has a staged replacement.
func (b *Batch) Pending(path string) bool {
	for _, it := range b.items {
		if it.path == path {
			return true
		}
	}
	return false
}

// openDir returns dir open: the one the batch holds, or a new one that release closes.
// The batch keeps up to maxOpen directories; a larger tree's are opened again for each step
// of Commit, through the same checks.
func (b *Batch) openDir(dir string, create, keep bool) (d *safepath.Dir, release func(), err error) {
	if d := b.dirs[dir]; d != nil {
		return d, func() {}, nil
	}
	d, err = safepath.OpenDir(dir, create)
	if err != nil {
		return nil, nil, err
	}
	if keep && len(b.dirs) < maxOpen {
		if b.dirs == nil {
			b.dirs = map[string]*safepath.Dir{}
		}
		b.dirs[dir] = d
		return d, func() {}, nil
	}
	return d, func() { d.Close() }, nil
}

func (b *Batch) closeDirs() {
	for _, d := range b.dirs {
		d.Close()
	}
	b.dirs = nil
}

// Stage writes data to a temporary file in path's directory (made when missing) with mode and
// owner, without syncing it. uid or gid -1 keeps the current owner of a regular file at path
// (or the writer's for a new file). On error nothing is staged.
func (b *Batch) Stage(path string, data []byte, mode os.FileMode, uid, gid int) error {
	dir, name := filepath.Dir(path), filepath.Base(path)
	d, release, err := b.openDir(dir, true, true)
	if err != nil {
		return err
	}
	defer release()
	var st unix.Stat_t
	if err := unix.Fstatat(d.Fd(), name, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil && st.Mode&unix.S_IFMT == unix.S_IFREG {
		if uid < 0 {
			uid = int(st.Uid)
		}
		if gid < 0 {
			gid = int(st.Gid)
		}
	}
	if !b.swept[dir] {
		// A directory we write to is cleared, once a batch, of the temporary files of writers
		// killed before their rename. An error leaves them for the next write.
		if b.swept == nil {
			b.swept = map[string]bool{}
		}
		b.swept[dir] = true
		findStaleAt(d, dir, "", true)
	}
	tmp, tmpName, err := lockedTemp(d, "."+name+tempMark)
	if err != nil {
		return err
	}
	fail := func(err error) error {
		tmp.Close()
		unix.Unlinkat(d.Fd(), tmpName, 0)
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		return fail(err)
	}
	// Mode and owner are set on the descriptor, before the rename: the file is never in place
	// with another mode or owner, and no name is looked up again to set them.
	if err := tmp.Chmod(mode); err != nil {
		return fail(err)
	}
	if uid >= 0 || gid >= 0 {
		if err := tmp.Chown(uid, gid); err != nil {
			return fail(err)
		}
	}
	if err := unix.Fstat(int(tmp.Fd()), &st); err != nil {
		return fail(err)
	}
	it := &staged{path: path, dir: dir, name: name, tmp: tmpName, f: tmp, dev: st.Dev, ino: st.Ino}
	// A large tree: reopen at Commit rather than hold a descriptor each. Such a file is not
	// locked until then; a sweep by another writer meanwhile makes its Commit fail (the path
	// keeps its old content), never a partial file.
	if len(b.items) >= maxOpen {
		if err := tmp.Close(); err != nil {
			return fail(err)
		}
		it.f = nil
	}
	b.items = append(b.items, it)
	return nil
}

// lockedTemp creates a temporary file named prefix+DIGITS in d and locks it. The lock is held
// until the file is renamed or removed (its descriptor closed), and by the kernel no longer
// once this process dies: an unlocked temporary file is a dead writer's. Another writer's sweep
// can reach the file in the moment between creation and locking: it holds the lock then
// (EWOULDBLOCK), or has already removed the file (our lock is on an unlinked file). That file
// is the sweep's, and we make another. Once we hold the lock, no sweep removes the file.
func lockedTemp(d *safepath.Dir, prefix string) (*os.File, string, error) {
	swept := 0
	for try := 0; ; try++ {
		name := prefix + strconv.FormatUint(uint64(rand.Uint32()), 10)
		fd, err := unix.Openat(d.Fd(), name, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if errors.Is(err, unix.EEXIST) && try < 10000 {
			continue
		}
		if err != nil {
			return nil, "", &fs.PathError{Op: "open", Path: d.Join(name), Err: err}
		}
		tmp := os.NewFile(uintptr(fd), d.Join(name))
		err = unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			if stillNamed(d, name, tmp) {
				return tmp, name, nil
			}
			err = unix.EWOULDBLOCK // a sweep removed it first
		}
		tmp.Close()
		if !errors.Is(err, unix.EWOULDBLOCK) || swept == 9 {
			unix.Unlinkat(d.Fd(), name, 0)
			return nil, "", &fs.PathError{Op: "flock", Path: d.Join(name), Err: err}
		}
		swept++
	}
}

// stillNamed reports whether name in d still refers to f.
func stillNamed(d *safepath.Dir, name string, f *os.File) bool {
	var open, named unix.Stat_t
	if unix.Fstat(int(f.Fd()), &open) != nil || unix.Fstatat(d.Fd(), name, &named, unix.AT_SYMLINK_NOFOLLOW) != nil {
		return false
	}
	return open.Dev == named.Dev && open.Ino == named.Ino
}

// maxOpen is how many staged files keep their descriptor open until Commit.
const maxOpen = 256

// syncers bounds the fsyncs in flight: enough for the filesystem to batch them into one
// journal commit, few enough not to start a thread per file of a large tree.
const syncers = 16

// Commit syncs every staged file (in parallel), renames each over its path, then syncs each
// directory that received one, once. It returns one error (or nil) per staged file, in Stage
// order; a file whose sync failed is not renamed, so its path keeps the old content. When
// Commit returns, every file it reports as done is durable. The batch is empty afterwards.
func (b *Batch) Commit() []error {
	items := b.items
	b.items = nil
	defer b.closeDirs()
	errs := make([]error, len(items))
	parallel(len(items), func(i int) {
		it := items[i]
		err := error(nil)
		if it.f == nil {
			it.f, err = b.reopen(it)
		}
		if err == nil {
			err = it.f.Sync()
		}
		it.err = err
	})
	dirs := map[string]bool{}
	var dirList []string
	for i, it := range items {
		if it.err == nil {
			it.err = b.rename(it)
		}
		if it.f != nil { // closed after the rename: the lock keeps sweepers off until then
			if cerr := it.f.Close(); it.err == nil {
				it.err = cerr
			}
			it.f = nil
		}
		if it.err != nil {
			b.remove(it)
			errs[i] = it.err
			continue
		}
		if !dirs[it.dir] {
			dirs[it.dir] = true
			dirList = append(dirList, it.dir)
		}
	}
	dirErr := make([]error, len(dirList))
	parallel(len(dirList), func(i int) {
		err := b.syncDir(dirList[i])
		// A filesystem that cannot sync a directory (some do not support it) still renamed
		// the file atomically; only an I/O error means the rename may not survive a crash.
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOTSUP) {
			err = nil
		}
		dirErr[i] = err
	})
	for i, it := range items {
		if errs[i] != nil {
			continue
		}
		for j, d := range dirList {
			if d == it.dir && dirErr[j] != nil {
				errs[i] = dirErr[j]
			}
		}
	}
	return errs
}

// reopen opens the temporary file of it again (closed past maxOpen), checking that it is still
// the file staged. It only reads b.dirs: Commit calls it in parallel.
func (b *Batch) reopen(it *staged) (*os.File, error) {
	d, release, err := b.openDir(it.dir, false, false)
	if err != nil {
		return nil, err
	}
	defer release()
	fd, err := unix.Openat(d.Fd(), it.tmp, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: d.Join(it.tmp), Err: err}
	}
	f := os.NewFile(uintptr(fd), d.Join(it.tmp))
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Dev != it.dev || st.Ino != it.ino {
		f.Close()
		return nil, &fs.PathError{Op: "open", Path: d.Join(it.tmp), Err: errReplaced}
	}
	return f, nil
}

var errReplaced = errors.New("the temporary file was replaced before its commit")

func (b *Batch) rename(it *staged) error {
	d, release, err := b.openDir(it.dir, false, false)
	if err != nil {
		return err
	}
	defer release()
	if err := unix.Renameat(d.Fd(), it.tmp, d.Fd(), it.name); err != nil {
		return &os.LinkError{Op: "rename", Old: d.Join(it.tmp), New: d.Join(it.name), Err: err}
	}
	return nil
}

func (b *Batch) remove(it *staged) {
	d, release, err := b.openDir(it.dir, false, false)
	if err != nil {
		return
	}
	defer release()
	unix.Unlinkat(d.Fd(), it.tmp, 0)
}

func (b *Batch) syncDir(dir string) error {
	d, release, err := b.openDir(dir, false, false)
	if err != nil {
		return err
	}
	defer release()
	fd, err := unix.Openat(d.Fd(), ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &fs.PathError{Op: "open", Path: d.Path(), Err: err}
	}
	defer unix.Close(fd)
	if err := unix.Fsync(fd); err != nil {
		return &fs.PathError{Op: "sync", Path: d.Path(), Err: err}
	}
	return nil
}

// Abort removes every staged temporary file; no path changes.
func (b *Batch) Abort() {
	for _, it := range b.items {
		if it.f != nil {
			it.f.Close()
		}
		b.remove(it)
	}
	b.items = nil
	b.closeDirs()
}

func parallel(n int, f func(i int)) {
	if n == 1 {
		f(0)
		return
	}
	var wg sync.WaitGroup
	next := make(chan int)
	for w := 0; w < min(n, syncers); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				f(i)
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
}

// tempMark separates a temporary file's target name from its random digits.
const tempMark = ".brine-"

// tempTarget returns the name of the file that name, a temporary file of this package
// (.NAME.brine-DIGITS), was to replace, or "" when name is not one.
func tempTarget(name string) string {
	i := strings.LastIndex(name, tempMark)
	if !strings.HasPrefix(name, ".") || i < 2 {
		return ""
	}
	digits := name[i+len(tempMark):]
	if digits == "" || strings.Trim(digits, "0123456789") != "" {
		return ""
	}
	return name[1:i]
}

// Stale returns the temporary files that writers of path killed before their rename left
// beside it: regular files (never symbolic links) named .NAME.brine-DIGITS on which no live
// writer holds its lock.
func Stale(path string) ([]string, error) {
	return findStale(filepath.Dir(path), filepath.Base(path), false)
}

// HasTemp reports whether dir holds a temporary file of this package, of any target, stale or
// not (false when dir does not exist): a directory without one has nothing for Stale to find.
func HasTemp(dir string) (bool, error) {
	d, err := safepath.OpenDir(dir, false)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer d.Close()
	entries, err := readDir(d)
	if err != nil {
		return false, err
	}
	for _, e := range entries {
		if tempTarget(e.Name()) != "" {
			return true, nil
		}
	}
	return false, nil
}

// RemoveStale removes the temporary files that Stale returns.
func RemoveStale(path string) error {
	_, err := findStale(filepath.Dir(path), filepath.Base(path), true)
	return err
}

func findStale(dir, target string, remove bool) ([]string, error) {
	d, err := safepath.OpenDir(dir, false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return findStaleAt(d, dir, target, remove)
}

// findStaleAt lists the stale temporary files in d (named dir in what it returns), of target
// (or of any file when ""), and removes them when remove is set.
func findStaleAt(d *safepath.Dir, dir, target string, remove bool) ([]string, error) {
	entries, err := readDir(d)
	if err != nil {
		return nil, err
	}
	var out []string
	var errs []error
	for _, e := range entries {
		t := tempTarget(e.Name())
		if t == "" || (target != "" && t != target) || !e.Type().IsRegular() {
			continue
		}
		stale, err := staleTemp(d, e.Name(), remove)
		if err != nil {
			errs = append(errs, err)
		}
		if stale {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	return out, errors.Join(errs...)
}

func readDir(d *safepath.Dir) ([]os.DirEntry, error) {
	fd, err := unix.Openat(d.Fd(), ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: d.Path(), Err: err}
	}
	f := os.NewFile(uintptr(fd), d.Path())
	defer f.Close()
	return f.ReadDir(-1)
}

// staleTemp reports whether name in d is a temporary file no live writer holds, and removes it
// when remove is set. It opens the file without following a symbolic link and removes it only
// while holding its lock and only if the name still refers to the file it locked.
func staleTemp(d *safepath.Dir, name string, remove bool) (bool, error) {
	fd, err := unix.Openat(d.Fd(), name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ELOOP) {
			return false, nil // renamed, removed, or a symbolic link now
		}
		return false, &fs.PathError{Op: "open", Path: d.Join(name), Err: err}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return false, nil
	}
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return false, nil // its writer is alive
	}
	if !remove {
		return true, nil
	}
	var now unix.Stat_t
	if err := unix.Fstatat(d.Fd(), name, &now, unix.AT_SYMLINK_NOFOLLOW); err != nil || now.Ino != st.Ino || now.Dev != st.Dev {
		return false, nil
	}
	if err := unix.Unlinkat(d.Fd(), name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return false, &fs.PathError{Op: "remove", Path: d.Join(name), Err: err}
	}
	return true, nil
}
