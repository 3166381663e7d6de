package master

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
)

// Client talks to a master over its control socket; the CLI does nothing else.
type Client struct {
	Path string
}

// Do sends req and calls onResponse for every line of the answer. It returns the error of an
// "error" line, or an error if the master could not be reached or hung up early.
func (c *Client) Do(ctx context.Context, req ControlRequest, onResponse func(ControlResponse)) error {
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
