package swarm

import (
	"context"
	"errors"
	"fmt"

	"github.com/go-zeromq/zmq4"
)

// IdleConns opens n idle ZeroMQ connections to addr (host:port) that never authenticate: SUBs
// subscribed to a topic each (kind "sub", to a master's publish port, which holds them for 10 s
// waiting for a session's credential, then closes them) or DEALERs (kind "dealer", to its
// request port). What they add to a master's memory and descriptors is what one connection of
// a minion costs it, apart from the session (`brine bench conns`). The returned function closes
// them all.
func IdleConns(ctx context.Context, kind, addr string, n int) (func(), error) {
	var socks []zmq4.Socket
	closeAll := func() {
		for _, s := range socks {
			_ = s.Close()
		}
	}
	for i := range n {
		var s zmq4.Socket
		switch kind {
		case "sub":
			s = zmq4.NewSub(ctx)
		case "dealer":
			s = zmq4.NewDealer(ctx, zmq4.WithID(zmq4.SocketIdentity(fmt.Sprintf("idle%d", i))))
		default:
			return nil, errors.New(`kind must be "sub" or "dealer"`)
		}
		socks = append(socks, s)
		if err := s.Dial("tcp://" + addr); err != nil {
			closeAll()
			return nil, fmt.Errorf("connection %d: %w", i+1, err)
		}
		if kind == "sub" {
			if err := s.SetOption(zmq4.OptionSubscribe, fmt.Sprintf("idle%d", i)); err != nil {
				closeAll()
				return nil, err
			}
		}
	}
	return closeAll, nil
}
