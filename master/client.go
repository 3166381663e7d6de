package master

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
)

// Client talks to a master over its control socket; the CLI does nothing else.
type Client struct {
	Path string
}

// Do sends req and calls onResponse for every line of the answer. It returns the error of an
// "error" line, or an error if the master could not be reached or hung up early.
func (c *Client) Do(ctx context.Context, req ControlRequest, onResponse func(ControlResponse)) error {
	if err := CheckControlSocket(c.Path); err != nil {
		return err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.Path)
	if err != nil {
		return fmt.Errorf("cannot reach the master at %s: %w", c.Path, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if err := json.NewEncoder(conn).Encode(req); err != nil {
		return fmt.Errorf("send to master: %w", err)
	}
	dec := json.NewDecoder(bufio.NewReader(conn))
	for {
		var r ControlResponse
		if err := dec.Decode(&r); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return errors.New("the master closed the control connection early")
		}
		if r.Event.Event == "error" {
			return errors.New(r.Error)
		}
		if onResponse != nil {
			onResponse(r)
		}
		if r.Event.Event == "done" || r.Event.Event == "invalid" {
			return nil
		}
	}
}

// One sends req and returns the final line.
func (c *Client) One(ctx context.Context, req ControlRequest) (ControlResponse, error) {
	var last ControlResponse
	err := c.Do(ctx, req, func(r ControlResponse) { last = r })
	return last, err
}

// ErrUntrustedSocket is wrapped by the errors of CheckControlSocket.
var ErrUntrustedSocket = errors.New("untrusted control socket")

// CheckControlSocket refuses a control socket the CLI must not send commands (and bundles,
// variables) to, because someone other than root or the current user could have put it there:
// a symbolic link, not a socket, owned by another user, or in a directory that is a symbolic
// link, owned by another user, or writable by group or others. A socket that does not exist
// passes: dialling it fails with its own error.
func CheckControlSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("control socket %s: %w", path, err)
	}
	refuse := func(why string) error {
		return fmt.Errorf("%w %s: %s; the master makes its socket in a directory only its user can write (see docs/master.md)", ErrUntrustedSocket, path, why)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return refuse("it is a symbolic link (name the socket itself with --socket)")
	}
	if fi.Mode()&fs.ModeSocket == 0 {
		return refuse("it is not a unix socket")
	}
	if err := trustedOwner(fi); err != nil {
		return refuse("it is " + err.Error())
	}
	dir := filepath.Dir(path)
	di, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("control socket directory %s: %w", dir, err)
	}
	if di.Mode()&fs.ModeSymlink != 0 {
		return refuse("its directory " + dir + " is a symbolic link")
	}
	if err := trustedOwner(di); err != nil {
		return refuse("its directory " + dir + " is " + err.Error())
	}
	if di.Mode().Perm()&0o022 != 0 {
		return refuse(fmt.Sprintf("its directory %s is writable by group or others (mode %#o)", dir, di.Mode().Perm()))
	}
	return nil
}

// trustedOwner says why fi is not owned by root or the current user, or returns nil.
func trustedOwner(fi fs.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return errors.New("of unknown ownership")
	}
	if st.Uid != 0 && int(st.Uid) != os.Getuid() {
		return fmt.Errorf("owned by uid %d, neither root nor you (uid %d)", st.Uid, os.Getuid())
	}
	return nil
}
