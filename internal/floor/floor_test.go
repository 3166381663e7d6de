package floor

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/brinecm/brine/pki"
	"github.com/brinecm/brine/testbed"
	"golang.org/x/sys/unix"
)

// minions is the fleet size of the rows these floors are for.
const minions = 50

// BenchmarkStartProcess starts a process and waits for it: the least a process costs (true), a
// Go program that does nothing (the runtime's start), and brine doing nothing (`brine version`:
// the runtime and every package's initialisation), which every CLI command pays once.
func BenchmarkStartProcess(b *testing.B) {
	dir := b.TempDir()
	src := filepath.Join(dir, "main.go")
	if err := os.WriteFile(src, []byte("package main\n\nfunc main() {}\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if out, err := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", empty, src).CombinedOutput(); err != nil {
		b.Fatalf("build an empty Go program: %v\n%s", err, out)
	}
	for _, c := range []struct {
		name string
		argv []string
	}{
		{"true", []string{"/bin/true"}},
		{"empty-go", []string{empty}},
		{"brine-version", []string{testbed.BrineBinary(b), "version"}},
	} {
		b.Run(c.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if err := exec.Command(c.argv[0], c.argv[1:]...).Run(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkLoopbackRoundTrip sends a 256-byte message over TCP on loopback and reads the echo:
// to one peer, and to 50 peers at once (a job to every minion and its return; the replies come
// back in any order).
func BenchmarkLoopbackRoundTrip(b *testing.B) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	b.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); defer c.Close(); io.Copy(c, c) }()
		}
	}()
	msg := bytes.Repeat([]byte("j"), 256)
	for _, n := range []int{1, minions} {
		b.Run(fmt.Sprintf("peers=%d", n), func(b *testing.B) {
			conns := make([]net.Conn, n)
			for i := range conns {
				c, err := net.Dial("tcp4", ln.Addr().String())
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				conns[i] = c
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				var rw sync.WaitGroup
				for _, c := range conns {
					rw.Add(1)
					go func() {
						defer rw.Done()
						buf := make([]byte, len(msg))
						if _, err := c.Write(msg); err != nil {
							b.Error(err)
							return
						}
						if _, err := io.ReadFull(c, buf); err != nil {
							b.Error(err)
						}
					}()
				}
				rw.Wait()
			}
		})
	}
}

// BenchmarkJobSignatures is the signature work of one job to 50 minions, on one core: the
// master signs the job (with its 4 KB bundle), each minion checks it and signs its return, the
// master checks the 50 returns.
func BenchmarkJobSignatures(b *testing.B) {
	master, err := pki.GenerateKeyPair()
	if err != nil {
		b.Fatal(err)
	}
	keys := make([]*pki.KeyPair, minions)
	for i := range keys {
		if keys[i], err = pki.GenerateKeyPair(); err != nil {
			b.Fatal(err)
		}
	}
	job := bytes.Repeat([]byte("b"), 4<<10)
	ret := bytes.Repeat([]byte("r"), 512)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		signed := master.SignAttached(job)
		for _, k := range keys {
			if _, ok := pki.OpenAttached(master.Pub.Sign, signed); !ok {
				b.Fatal("job signature")
			}
			sig := k.Sign("return", ret)
			if !pki.Verify(k.Pub.Sign, "return", ret, sig) {
				b.Fatal("return signature")
			}
		}
	}
}

// BenchmarkFsyncFiles writes what an apply of 20 small files writes on each minion, as durably
// as brine must: per minion a new directory, 20 files each written to a temporary name and
// renamed into place. fsync: every file fsynced (all in flight at once) before its rename, then
// the directory once, as brine does; syncfs: everything written and renamed, then one syncfs
// for the whole filesystem (one journal commit: the least a disk can do, but it also waits for
// every other writer's dirty pages, which is why brine does not). For one minion, and for 50 at
// once on this one disk.
func BenchmarkFsyncFiles(b *testing.B) {
	base := os.Getenv("FLOOR_DIR")
	if base == "" {
		base = os.TempDir()
	}
	for _, mode := range []string{"fsync", "syncfs"} {
		for _, n := range []int{1, minions} {
			b.Run(fmt.Sprintf("%s/minions=%d", mode, n), func(b *testing.B) {
				root, err := os.MkdirTemp(base, "brine-floor-")
				if err != nil {
					b.Fatal(err)
				}
				defer os.RemoveAll(root)
				for i := 0; i < b.N; i++ {
					var wg sync.WaitGroup
					errs := make(chan error, n)
					for m := 0; m < n; m++ {
						wg.Add(1)
						go func() {
							defer wg.Done()
							if err := writeFiles(filepath.Join(root, fmt.Sprintf("%d-%d", i, m)), 20, mode == "fsync"); err != nil {
								errs <- err
							}
						}()
					}
					wg.Wait()
					close(errs)
					for err := range errs {
						b.Fatal(err)
					}
					if mode == "syncfs" {
						if err := syncfs(root); err != nil {
							b.Fatal(err)
						}
					}
				}
			})
		}
	}
}

func syncfs(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return unix.Syncfs(int(d.Fd()))
}

// writeFiles makes dir and writes files small files into it, each to a temporary name and
// renamed; with sync, each fsynced (all at once) before its rename, then dir fsynced.
func writeFiles(dir string, files int, durable bool) error {
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	var wg sync.WaitGroup
	errs := make([]error, files)
	for f := 0; f < files; f++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tmp := filepath.Join(dir, fmt.Sprintf(".f%02d.tmp", f))
			fh, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o644)
			if err == nil {
				_, err = fmt.Fprintf(fh, "# file %d of %d\nminion = m%s\n", f+1, files, filepath.Base(dir))
				if err == nil && durable {
					err = fh.Sync()
				}
				if cerr := fh.Close(); err == nil {
					err = cerr
				}
			}
			if err == nil {
				err = os.Rename(tmp, filepath.Join(dir, fmt.Sprintf("f%02d.conf", f)))
			}
			errs[f] = err
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	if !durable {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
