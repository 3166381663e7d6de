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
package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
)

// Write replaces path with data and mode. An existing file keeps its owner.
func Write(path string, data []byte, mode os.FileMode) error {
	return WriteOwned(path, data, mode, -1, -1)
}

// WriteOwned replaces path with data, mode and owner: a temporary file in the same directory
// (made when missing), written, chmod and chown, synced, renamed over path, then the directory
// synced. uid or gid -1 keeps the current owner (or the writer's for a new file).
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
	swept map[string]bool // directories cleared of stale temporary files
}

type staged struct {
	path, tmp string
	f         *os.File // open until synced
	err       error
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

// Stage writes data to a temporary file in path's directory (made when missing) with mode and
// owner, without syncing it. uid or gid -1 keeps the current owner (or the writer's for a new
// file). On error nothing is staged.
func (b *Batch) Stage(path string, data []byte, mode os.FileMode, uid, gid int) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if st, err := os.Stat(path); err == nil {
		if sys, ok := st.Sys().(*syscall.Stat_t); ok {
			if uid < 0 {
				uid = int(sys.Uid)
			}
			if gid < 0 {
				gid = int(sys.Gid)
			}
		}
	}
	if !b.swept[dir] {
		// A directory we write to is cleared, once a batch, of the temporary files of writers
		// killed before their rename. An error leaves them for the next write.
		if b.swept == nil {
			b.swept = map[string]bool{}
		}
		b.swept[dir] = true
		removeStale(dir, "")
	}
	tmp, err := lockedTemp(dir, "."+filepath.Base(path)+tempMark+"*")
	if err != nil {
		return err
	}
	fail := func(err error) error {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		return fail(err)
	}
	if err := tmp.Chmod(mode); err != nil {
		return fail(err)
	}
	if uid >= 0 || gid >= 0 {
		if err := tmp.Chown(uid, gid); err != nil {
			return fail(err)
		}
	}
	it := &staged{path: path, tmp: tmp.Name(), f: tmp}
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

// lockedTemp creates a temporary file and locks it. The lock is held until the file is renamed
// or removed (its descriptor closed), and by the kernel no longer once this process dies: an
// unlocked temporary file is a dead writer's. Another writer's sweep can reach the file in the
// moment between creation and locking: it holds the lock then (EWOULDBLOCK), or has already
// removed the file (our lock is on an unlinked file). That file is the sweep's, and we make
// another. Once we hold the lock, no sweep removes the file.
func lockedTemp(dir, pattern string) (*os.File, error) {
	for try := 0; ; try++ {
		tmp, err := os.CreateTemp(dir, pattern)
		if err != nil {
			return nil, err
		}
		err = syscall.Flock(int(tmp.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			if stillNamed(tmp) {
				return tmp, nil
			}
			err = syscall.EWOULDBLOCK // a sweep removed it first
		}
		tmp.Close()
		if !errors.Is(err, syscall.EWOULDBLOCK) || try == 9 {
			os.Remove(tmp.Name())
			return nil, err
		}
	}
}

// stillNamed reports whether f's name still refers to f.
func stillNamed(f *os.File) bool {
	open, err := f.Stat()
	if err != nil {
		return false
	}
	named, err := os.Lstat(f.Name())
	return err == nil && os.SameFile(open, named)
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
	errs := make([]error, len(items))
	parallel(len(items), func(i int) {
		it := items[i]
		err := error(nil)
		if it.f == nil {
			it.f, err = os.Open(it.tmp)
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
			it.err = os.Rename(it.tmp, it.path)
		}
		if it.f != nil { // closed after the rename: the lock keeps sweepers off until then
			if cerr := it.f.Close(); it.err == nil {
				it.err = cerr
			}
			it.f = nil
		}
		if it.err != nil {
			os.Remove(it.tmp)
			errs[i] = it.err
			continue
		}
		if d := filepath.Dir(it.path); !dirs[d] {
			dirs[d] = true
			dirList = append(dirList, d)
		}
	}
	dirErr := make([]error, len(dirList))
	parallel(len(dirList), func(i int) {
		d, err := os.Open(dirList[i])
		if err == nil {
			err = d.Sync()
			d.Close()
		}
		// A filesystem that cannot sync a directory (some do not support it) still renamed
		// the file atomically; only an I/O error means the rename may not survive a crash.
		if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOTSUP) {
			err = nil
		}
		dirErr[i] = err
	})
	for i, it := range items {
		if errs[i] != nil {
			continue
		}
		for j, d := range dirList {
			if d == filepath.Dir(it.path) && dirErr[j] != nil {
				errs[i] = dirErr[j]
			}
		}
	}
	return errs
}

// Abort removes every staged temporary file; no path changes.
func (b *Batch) Abort() {
	for _, it := range b.items {
		if it.f != nil {
			it.f.Close()
		}
		os.Remove(it.tmp)
	}
	b.items = nil
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
	entries, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return false, nil
	}
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

// removeStale removes the stale temporary files in dir, of target (or of any file when "").
func removeStale(dir, target string) {
	findStale(dir, target, true)
}

func findStale(dir, target string, remove bool) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil, nil
	}
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
		p := filepath.Join(dir, e.Name())
		stale, err := staleTemp(p, remove)
		if err != nil {
			errs = append(errs, err)
		}
		if stale {
			out = append(out, p)
		}
	}
	return out, errors.Join(errs...)
}

// staleTemp reports whether p is a temporary file no live writer holds, and removes it when
// remove is set. It opens p without following a symbolic link and removes it only while holding
// its lock and only if the name still refers to the file it locked.
func staleTemp(p string, remove bool) (bool, error) {
	fd, err := syscall.Open(p, syscall.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ELOOP) {
			return false, nil // renamed, removed, or a symbolic link now
		}
		return false, &os.PathError{Op: "open", Path: p, Err: err}
	}
	defer syscall.Close(fd)
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return false, nil
	}
	if err := syscall.Flock(fd, syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return false, nil // its writer is alive
	}
	if !remove {
		return true, nil
	}
	var now syscall.Stat_t
	if err := syscall.Lstat(p, &now); err != nil || now.Ino != st.Ino || now.Dev != st.Dev {
		return false, nil
	}
	if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
		return false, err
	}
	return true, nil
}
