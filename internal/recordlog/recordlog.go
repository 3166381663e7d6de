// Package recordlog keeps a small append-only log of records in one file, opened once: a record
// costs one write (and, when it must be durable, one fdatasync), never a new file. It is how a
// minion keeps its per-job state (the seen jobs, the outbox) without creating and deleting files
// for each job.
//
// A record is one line: the CRC-32C of the payload (8 hex digits), a space, the payload, a
// newline. A payload holds no newline (JSON from encoding/json never does).
//
// After a crash the end of the file may hold a record whose append had not been synced: cut
// short, or (on a filesystem without a journal) zeros or old blocks. Open drops such a torn tail
// (from the first record that does not check to the end, when no good record follows) and cuts
// the file there. A record that does not check with good records after it was not torn by a
// crash during its append: Open reports how many there are and leaves the decision to the caller.
//
// The log is compacted by rewriting it whole with atomicfile (Rewrite), or emptied (Truncate).
package recordlog

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/brinecm/brine/internal/atomicfile"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Record is one record read back, with where its payload starts in the file.
type Record struct {
	Off     int64
	Payload []byte
}

// Stats says what reading a log found besides its good records.
type Stats struct {
	Torn int64 // bytes of a torn tail dropped
	Bad  int   // records that do not check, with good records after them
}

// Log is an open log. Its methods are not safe for concurrent use: the caller serialises them.
type Log struct {
	path   string
	f      *os.File // nil when broken
	size   int64    // bytes of good records
	broken error    // why the file is not usable until Rewrite
}

// Read parses the log at path without changing it (a missing file is an empty log). A reader
// racing a writer sees its unfinished last record as a torn tail.
func Read(path string) ([]Record, Stats, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, Stats{}, nil
	}
	if err != nil {
		return nil, Stats{}, err
	}
	recs, st, _ := parse(data)
	return recs, st, nil
}

// parse returns the good records, the stats, and the end of the last good record.
func parse(data []byte) ([]Record, Stats, int64) {
	var recs []Record
	var st Stats
	var end int64
	bad := 0 // bad records since the last good one
	for off := 0; off < len(data); {
		nl := bytes.IndexByte(data[off:], '\n')
		if nl < 0 {
			break // no newline: torn
		}
		line := data[off : off+nl]
		if p, ok := check(line); ok {
			recs = append(recs, Record{Off: int64(off + 9), Payload: p})
			st.Bad += bad
			bad = 0
			end = int64(off + nl + 1)
		} else {
			bad++
		}
		off += nl + 1
	}
	st.Torn = int64(len(data)) - end
	return recs, st, end
}

func check(line []byte) ([]byte, bool) {
	if len(line) < 9 || line[8] != ' ' {
		return nil, false
	}
	sum, err := strconv.ParseUint(string(line[:8]), 16, 32)
	if err != nil || uint32(sum) != crc32.Checksum(line[9:], castagnoli) {
		return nil, false
	}
	return line[9:], true
}

func frame(payload []byte) ([]byte, error) {
	if bytes.IndexByte(payload, '\n') >= 0 {
		return nil, errors.New("recordlog: payload holds a newline")
	}
	b := make([]byte, 0, len(payload)+10)
	b = fmt.Appendf(b, "%08x ", crc32.Checksum(payload, castagnoli))
	b = append(b, payload...)
	return append(b, '\n'), nil
}

// Open reads the log at path (made empty when missing, with mode 0600) and opens it for
// appending. A torn tail is cut off, durably, before Open returns; records that do not check
// with good records after them stay in the file (Stats.Bad) until the caller rewrites it.
func Open(path string) (*Log, []Record, Stats, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, Stats{}, err
	}
	data, err := readAll(f)
	if err != nil {
		f.Close()
		return nil, nil, Stats{}, err
	}
	recs, st, end := parse(data)
	if st.Torn > 0 {
		if err := f.Truncate(end); err == nil {
			err = f.Sync()
		}
		if err != nil {
			f.Close()
			return nil, nil, Stats{}, fmt.Errorf("cut the torn tail of %s: %w", path, err)
		}
	}
	if len(data) == 0 {
		// A new file: its directory entry must survive a crash like its records.
		if err := syncDir(filepath.Dir(path)); err != nil {
			f.Close()
			return nil, nil, Stats{}, err
		}
	}
	return &Log{path: path, f: f, size: end}, recs, st, nil
}

func readAll(f *os.File) ([]byte, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	data := make([]byte, st.Size())
	n, err := f.ReadAt(data, 0)
	if n == len(data) {
		err = nil
	}
	return data[:n], err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Size is the length of the file's good records.
func (l *Log) Size() int64 { return l.size }

// Append adds a record and returns where its payload starts. With durable, it returns only once
// the record (and every record before it) is on disk: one fdatasync. On error nothing of the
// record stays in the file, or the log is broken (every Append fails) until Rewrite.
func (l *Log) Append(payload []byte, durable bool) (int64, error) {
	if l.broken != nil {
		return 0, l.broken
	}
	b, err := frame(payload)
	if err != nil {
		return 0, err
	}
	start := l.size
	n, err := l.f.Write(b)
	if err == nil && durable {
		err = fdatasync(l.f)
	}
	if err != nil {
		// Cut what was written of the record (after a failed sync too: it may not be on disk,
		// and whoever asked for it was told so). A log that cannot be cut waits for Rewrite.
		if n > 0 || durable {
			if terr := l.f.Truncate(start); terr != nil {
				l.broken = fmt.Errorf("record log %s: %w (and cannot cut it: %v)", l.path, err, terr)
			}
		}
		return 0, err
	}
	l.size += int64(len(b))
	return start + 9, nil
}

func fdatasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			return err
		}
	}
}

// ReadAt returns the payload of n bytes that starts at off (from Open, Append or Rewrite).
func (l *Log) ReadAt(off int64, n int) ([]byte, error) {
	if l.f == nil {
		return nil, l.broken
	}
	b := make([]byte, n)
	if _, err := l.f.ReadAt(b, off); err != nil {
		return nil, err
	}
	return b, nil
}

// Rewrite replaces the log with payloads, atomically and durably (atomicfile), and returns
// where each payload now starts. On error the log keeps its records (or is broken, when the new
// file is in place but cannot be opened; a later Rewrite mends it).
func (l *Log) Rewrite(payloads [][]byte) ([]int64, error) {
	var buf []byte
	offs := make([]int64, len(payloads))
	for i, p := range payloads {
		b, err := frame(p)
		if err != nil {
			return nil, err
		}
		offs[i] = int64(len(buf)) + 9
		buf = append(buf, b...)
	}
	if err := atomicfile.Write(l.path, buf, 0o600); err != nil {
		return nil, err
	}
	if l.f != nil {
		l.f.Close()
	}
	f, err := os.OpenFile(l.path, os.O_RDWR|os.O_APPEND, 0o600)
	if err != nil {
		l.f, l.broken = nil, fmt.Errorf("reopen record log %s: %w", l.path, err)
		return nil, err
	}
	l.f, l.size, l.broken = f, int64(len(buf)), nil
	return offs, nil
}

// Truncate empties the log, without a sync: a crash may bring its records back.
func (l *Log) Truncate() error {
	if l.broken != nil {
		return l.broken
	}
	if err := l.f.Truncate(0); err != nil {
		return err
	}
	l.size = 0
	return nil
}

// Close closes the file.
func (l *Log) Close() error {
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	if l.broken == nil {
		l.broken = errors.New("record log " + l.path + " is closed")
	}
	return err
}
