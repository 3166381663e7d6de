package master

import (
	"syscall"
)

// Every connected minion holds two TCP connections to its master, a DEALER to the request
// socket and a SUB to the publish socket, and so two of the master's file descriptors
// (docs/design.md, "One connection per minion or two").
const fdsPerMinion = 2

// fdReserve is what the master keeps for everything but its minions' sessions: listeners, the
// store (bbolt's file, or a PostgreSQL pool), the control socket's connections (64), the
// bootstrap endpoint's (bootstrapMaxConns), handshakes in progress, logs and compile children.
const fdReserve = 512

// MinionsForFileLimit returns how many connected minions a master holds with limit file
// descriptors (RLIMIT_NOFILE): (limit - 512) / 2. LimitNOFILE=65536 in the shipped systemd unit
// holds 32,512.
func MinionsForFileLimit(limit uint64) int {
	if limit <= fdReserve {
		return 0
	}
	return int((limit - fdReserve) / fdsPerMinion)
}

// raiseFileLimit raises the soft RLIMIT_NOFILE to the hard one and returns the soft limit in
// effect. Go's runtime does the same at start (since Go 1.19); doing it here keeps it true
// for a master embedded in another program that lowered it.
func raiseFileLimit() (uint64, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, err
	}
	if rl.Cur < rl.Max {
		want := rl
		want.Cur = rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err == nil {
			rl = want
		}
	}
	return rl.Cur, nil
}

// checkFileLimit raises the soft file limit to the hard one and warns when it cannot hold every
// accepted minion: past it, new connections fail to be accepted (EMFILE) and those minions stay
// away, retrying, until others leave. It returns the limit in effect (0: unknown).
func (m *Master) checkFileLimit() uint64 {
	limit := m.cfg.fileLimit
	if limit == 0 {
		var err error
		if limit, err = raiseFileLimit(); err != nil {
			m.log.Warn("cannot read the file descriptor limit", "err", err)
			return 0
		}
	}
	accepted := len(m.keys.Accepted())
	if holds := MinionsForFileLimit(limit); holds < accepted {
		m.log.Warn("the file descriptor limit cannot hold every accepted minion: raise it (LimitNOFILE in the systemd unit, ulimit -n)",
			"limit", limit, "minions_max", holds, "accepted", accepted,
			"need", fdsPerMinion*accepted+fdReserve)
	}
	return limit
}
