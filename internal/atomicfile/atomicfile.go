// Package atomicfile replaces files so that a reader, or the host after a crash, sees either the
// old content or the new, never a half-written file. It is the one way brine writes a file it
// keeps (keys, the key store, a minion's state) or manages (a file resource, a pidfile).
package atomicfile

import (
	"os"
	"path/filepath"
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
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".brine-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // a no-op after the rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if uid >= 0 || gid >= 0 {
		if err := tmp.Chown(uid, gid); err != nil {
			tmp.Close()
			return err
		}
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
