package zmtp

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
)

// Read-ahead. zmq4 reads a frame as its 2-byte header, the rest of a long header, then its
// body, each with io.ReadFull on the connection: a read system call each, so a message of one
// frame was two reads and a PUB message of topic and body four. On a trusted connection Read
// reads up to aheadSize bytes at once and returns the rest to zmq4's next reads from memory.
//
// Bounds: the guard's parser still sees the bytes when Read returns them to zmq4, in the same
// pieces as zmq4 asks for, so its limits act exactly as before. Untrusted connections (a
// listener's, before Router.Trust) never read ahead: what an unauthenticated peer can make the
// master hold is unchanged. A trusted connection holds at most aheadSize bytes that zmq4 has not
// taken, in a buffer from a pool that it takes only when the socket has data (the wait for data
// happens with no buffer, through RawConn.Read) and gives back once zmq4 took all of it, so an
// idle connection holds none. A trusted peer may already make the master allocate a message of
// Limits.MaxMsg (1 MiB by default) as soon as its header is read.
const aheadSize = 4096

var aheadPool = sync.Pool{New: func() any { return new([aheadSize]byte) }}

// readAhead returns bytes read ahead, or reads from the network into a pooled buffer and
// returns what fits into b, keeping the rest.
func (c *conn) readAhead(b []byte) (int, error) {
	if c.rbuf == nil {
		var n int
		var rerr error
		err := c.raw.Read(func(fd uintptr) bool {
			if c.rbuf == nil {
				c.rbuf = aheadPool.Get().(*[aheadSize]byte)
			}
			for {
				n, rerr = syscall.Read(int(fd), c.rbuf[:])
				if rerr != syscall.EINTR {
					break
				}
			}
			if rerr == syscall.EAGAIN {
				// Wait for data without a buffer: idle connections hold none.
				aheadPool.Put(c.rbuf)
				c.rbuf = nil
				return false
			}
			return true
		})
		switch {
		case err != nil: // closed, or the read deadline passed: as net.Conn.Read says it
			n = 0
		case rerr != nil:
			n = 0
			err = &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError("read", rerr)}
		case n == 0:
			err = io.EOF
		}
		if n == 0 {
			if c.rbuf != nil {
				aheadPool.Put(c.rbuf)
				c.rbuf = nil
			}
			return 0, err
		}
		c.reads.Add(1)
		c.roff, c.rend = 0, n
	}
	k := copy(b, c.rbuf[c.roff:c.rend])
	c.roff += k
	if c.roff == c.rend {
		aheadPool.Put(c.rbuf)
		c.rbuf = nil
	}
	return k, nil
}
