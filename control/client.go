// Package control is the master's control API: the ops the operator CLI sends over the
// master's unix control socket, their typed requests and responses, the client the CLI calls
// (one method per op) and the server the master registers its handlers with. The CLI imports
// this package, not the master's.
package control

import (
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

// Client talks to a master over its control socket.
type Client struct {
	// Path is the control socket.
	Path string
}

// Call sends req as op and returns the op's response, calling onEvent (when not nil) for each
// Event the master streams before it. It fails with the master's error, or when the master
// cannot be reached or hangs up early.
func Call[Req, Resp any](ctx context.Context, c *Client, op Op[Req, Resp], req Req, onEvent func(Event)) (Resp, error) {
	var resp Resp
	raw, err := json.Marshal(request{Op: op.Name, Body: req})
	if err != nil {
		return resp, fmt.Errorf("op %s: %w", op.Name, err)
	}
	if int64(len(raw)) > op.maxRequest() {
		return resp, fmt.Errorf("%w: op %s takes at most %d bytes, this one is %d", ErrTooLarge, op.Name, op.maxRequest(), len(raw))
	}
	if err := CheckControlSocket(c.Path); err != nil {
		return resp, err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.Path)
	if err != nil {
		return resp, fmt.Errorf("cannot reach the master at %s: %w", c.Path, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	dec := json.NewDecoder(conn)
	// No newline after the request: the master reads anything after it as a hang-up.
	if _, werr := conn.Write(raw); werr != nil {
		// The master may have refused the request before reading all of it: its reason
		// comes first.
		var r reply
		if dec.Decode(&r) == nil && r.Kind == kindError {
			return resp, errors.New(r.Error)
		}
		if ctx.Err() != nil {
			return resp, ctx.Err()
		}
		return resp, fmt.Errorf("send to master: %w", werr)
	}
	for {
		var r reply
		if err := dec.Decode(&r); err != nil {
			if ctx.Err() != nil {
				return resp, ctx.Err()
			}
			return resp, errors.New("the master closed the control connection early")
		}
		switch r.Kind {
		case kindEvent:
			if onEvent != nil && r.Event != nil {
				onEvent(*r.Event)
			}
		case kindError:
			return resp, errors.New(r.Error)
		case kindResult:
			if err := json.Unmarshal(r.Result, &resp); err != nil {
				return resp, fmt.Errorf("op %s: unreadable response: %w", op.Name, err)
			}
			return resp, nil
		default:
			return resp, fmt.Errorf("op %s: unknown reply kind %q", op.Name, r.Kind)
		}
	}
}

// Ping asks the minions req.Target names to answer; onEvent sees the job's events.
func (c *Client) Ping(ctx context.Context, req PingRequest, onEvent func(Event)) error {
	_, err := Call(ctx, c, OpPing, req, onEvent)
	return err
}

// Apply applies a bundle; onEvent sees the job's events.
func (c *Client) Apply(ctx context.Context, req ApplyRequest, onEvent func(Event)) error {
	_, err := Call(ctx, c, OpApply, req, onEvent)
	return err
}

// Run runs a shell command on minions; onEvent sees the job's events.
func (c *Client) Run(ctx context.Context, req RunRequest, onEvent func(Event)) error {
	_, err := Call(ctx, c, OpRun, req, onEvent)
	return err
}

// Capture has minions capture themselves; onEvent sees the job's events (the captures come in
// the returns).
func (c *Client) Capture(ctx context.Context, req CaptureRequest, onEvent func(Event)) error {
	_, err := Call(ctx, c, OpCapture, req, onEvent)
	return err
}

// Converge applies the site; onEvent sees the jobs' events.
func (c *Client) Converge(ctx context.Context, req ConvergeRequest, onEvent func(Event)) error {
	_, err := Call(ctx, c, OpConverge, req, onEvent)
	return err
}

// Provision applies one bundle to one new minion; onEvent sees the job's events.
func (c *Client) Provision(ctx context.Context, req ProvisionRequest, onEvent func(Event)) error {
	_, err := Call(ctx, c, OpProvision, req, onEvent)
	return err
}

// Status reports on minions.
func (c *Client) Status(ctx context.Context, req StatusRequest) (StatusResponse, error) {
	return Call(ctx, c, OpStatus, req, nil)
}

// Jobs lists recent jobs, newest first.
func (c *Client) Jobs(ctx context.Context, req JobsRequest) (JobsResponse, error) {
	return Call(ctx, c, OpJobs, req, nil)
}

// Job returns one job and its returns.
func (c *Client) Job(ctx context.Context, req JobRequest) (JobDetail, error) {
	return Call(ctx, c, OpJob, req, nil)
}

// Facts returns the last facts of minions.
func (c *Client) Facts(ctx context.Context, req FactsRequest) (FactsResponse, error) {
	return Call(ctx, c, OpFacts, req, nil)
}

// Drift returns the last drift checks of minions.
func (c *Client) Drift(ctx context.Context, req DriftRequest) (DriftResponse, error) {
	return Call(ctx, c, OpDrift, req, nil)
}

// Finger returns the master's key fingerprint.
func (c *Client) Finger(ctx context.Context) (FingerResponse, error) {
	return Call(ctx, c, OpFinger, None{}, nil)
}

// KeyList lists minion keys.
func (c *Client) KeyList(ctx context.Context, req KeyListRequest) (KeyListResponse, error) {
	return Call(ctx, c, OpKeyList, req, nil)
}

// KeyAccept accepts keys.
func (c *Client) KeyAccept(ctx context.Context, req KeyAcceptRequest) (KeyAcceptResponse, error) {
	return Call(ctx, c, OpKeyAccept, req, nil)
}

// KeyReject rejects keys; their sessions end.
func (c *Client) KeyReject(ctx context.Context, req KeyRequest) (KeyIDs, error) {
	return Call(ctx, c, OpKeyReject, req, nil)
}

// KeyDelete deletes keys; their sessions end.
func (c *Client) KeyDelete(ctx context.Context, req KeyRequest) (KeyIDs, error) {
	return Call(ctx, c, OpKeyDelete, req, nil)
}

// KeyGroups sets the groups of accepted keys.
func (c *Client) KeyGroups(ctx context.Context, req KeyGroupsRequest) (KeyIDs, error) {
	return Call(ctx, c, OpKeyGroups, req, nil)
}

// KeyAcceptTinc pins the changed tinc keys minions reported.
func (c *Client) KeyAcceptTinc(ctx context.Context, req KeyAcceptTincRequest) (KeyIDs, error) {
	return Call(ctx, c, OpKeyAcceptTinc, req, nil)
}

// TokenCreate makes an enrolment token.
func (c *Client) TokenCreate(ctx context.Context, req TokenRequest) (TokenResponse, error) {
	return Call(ctx, c, OpTokenCreate, req, nil)
}

// Bootstrap returns the master's bootstrap endpoint, address and fingerprint.
func (c *Client) Bootstrap(ctx context.Context) (BootstrapInfo, error) {
	return Call(ctx, c, OpBootstrap, None{}, nil)
}

// WaitEnrolled blocks until a minion is accepted and listening.
func (c *Client) WaitEnrolled(ctx context.Context, req WaitEnrolledRequest) error {
	_, err := Call(ctx, c, OpWaitEnrolled, req, nil)
	return err
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
	if err := TrustedOwner(fi); err != nil {
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
	if err := TrustedOwner(di); err != nil {
		return refuse("its directory " + dir + " is " + err.Error())
	}
	if di.Mode().Perm()&0o022 != 0 {
		return refuse(fmt.Sprintf("its directory %s is writable by group or others (mode %#o)", dir, di.Mode().Perm()))
	}
	return nil
}

// TrustedOwner says why fi is not owned by root or the current user, or returns nil. The
// master checks its socket's directory with it too.
func TrustedOwner(fi fs.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return errors.New("of unknown ownership")
	}
	if st.Uid != 0 && int(st.Uid) != os.Getuid() {
		return fmt.Errorf("owned by uid %d, neither root nor you (uid %d)", st.Uid, os.Getuid())
	}
	return nil
}
