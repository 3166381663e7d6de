package tinc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// The kernel's socket diagnostics (sock_diag, linux/inet_diag.h) show what /proc/net/tcp does
// not: how many bytes a connection received and how long ago it last sent. They tell a dial
// that a member answered from one it holds without an answer (tinc 1.0 "tarpits" a connection
// whose ID it cannot authenticate: it keeps the socket open and silent, so the dialler notices
// only at its PingTimeout, 5 s later), and they can destroy such a socket: the dialler's tincd
// then reads an error, and a SIGALRM makes it dial again at once.

// Sizes and attributes of linux/inet_diag.h; x/sys/unix has the message types only.
const (
	sizeofInetDiagSockID = 48 // sport, dport, src[4], dst[4], if, cookie[2]
	sizeofInetDiagReqV2  = 8 + sizeofInetDiagSockID
	sizeofInetDiagMsg    = 4 + sizeofInetDiagSockID + 20
	inetDiagInfo         = 2 // the attribute holding struct tcp_info
	tcpEstablished       = 1

	// Offsets in struct tcp_info (linux/tcp.h) of the fields read; the bytes counters came
	// with Linux 4.1 (4.2 for tcpi_bytes_received: a shorter tcp_info has neither).
	tcpInfoLastDataSent  = 44
	tcpInfoRTT           = 68
	tcpInfoBytesAcked    = 120
	tcpInfoBytesReceived = 128

	// maxDiagSockets bounds the sockets read in one dump.
	maxDiagSockets = 1 << 16
)

// tcpDial is one established TCP connection of this network namespace, seen from its local end.
type tcpDial struct {
	remote    netip.AddrPort
	localPort uint16
	id        []byte        // the kernel's inet_diag_sockid, to destroy it by
	family    uint8         // unix.AF_INET or AF_INET6
	acked     uint64        // bytes the other end acknowledged (the SYN counts one)
	received  uint64        // bytes received
	idle      time.Duration // since this end last sent data
	rtt       time.Duration // the kernel's smoothed round-trip time
}

// tcpDials returns the established TCP connections to the given remote ends, by remote end.
func tcpDials(remotes []netip.AddrPort) (map[netip.AddrPort][]tcpDial, error) {
	want := map[netip.AddrPort]bool{}
	for _, r := range remotes {
		want[r] = true
	}
	out := map[netip.AddrPort][]tcpDial{}
	err := eachEstablished(func(d tcpDial) {
		if want[d.remote] {
			out[d.remote] = append(out[d.remote], d)
		}
	})
	return out, err
}

// eachEstablished calls f with every established TCP connection of this network namespace.
func eachEstablished(f func(tcpDial)) error {
	fd, err := diagSocket()
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	seen := 0
	for i, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		req := diagRequest(unix.SOCK_DIAG_BY_FAMILY, unix.NLM_F_REQUEST|unix.NLM_F_DUMP, uint32(i+1), family, 1<<tcpEstablished, 1<<(inetDiagInfo-1), nil)
		if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			return fmt.Errorf("sock_diag: %w", err)
		}
		buf := make([]byte, 32<<10)
	dump:
		for {
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				return fmt.Errorf("sock_diag: %w", err)
			}
			for b := buf[:n]; len(b) >= unix.NLMSG_HDRLEN; {
				l := int(binary.NativeEndian.Uint32(b[0:]))
				if l < unix.NLMSG_HDRLEN || l > len(b) {
					return errors.New("sock_diag: malformed message")
				}
				switch binary.NativeEndian.Uint16(b[4:]) {
				case unix.NLMSG_DONE:
					break dump
				case unix.NLMSG_ERROR:
					if family == unix.AF_INET6 {
						break dump // no IPv6 in this kernel
					}
					return fmt.Errorf("sock_diag: %w", nlErrno(b[:l]))
				case unix.SOCK_DIAG_BY_FAMILY:
					if seen++; seen > maxDiagSockets {
						return errors.New("sock_diag: too many sockets")
					}
					if d, ok := parseDiagMsg(b[unix.NLMSG_HDRLEN:l]); ok {
						f(d)
					}
				}
				b = b[min(len(b), (l+3)&^3):]
			}
		}
	}
	return nil
}

// destroy closes d in the kernel (SOCK_DESTROY, CONFIG_INET_DIAG_DESTROY): the other end gets a
// reset and the socket's owner reads ECONNABORTED.
func (d tcpDial) destroy() error {
	fd, err := diagSocket()
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	req := diagRequest(unix.SOCK_DESTROY, unix.NLM_F_REQUEST|unix.NLM_F_ACK, 1, d.family, ^uint32(0), 0, d.id)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("sock_diag destroy: %w", err)
	}
	buf := make([]byte, 4096)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return fmt.Errorf("sock_diag destroy: %w", err)
	}
	if n < unix.NLMSG_HDRLEN || binary.NativeEndian.Uint16(buf[4:]) != unix.NLMSG_ERROR {
		return errors.New("sock_diag destroy: no acknowledgement")
	}
	if errno := nlErrno(buf[:n]); errno != 0 {
		return fmt.Errorf("sock_diag destroy %s: %w", d.remote, errno)
	}
	return nil
}

func diagSocket() (int, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return -1, fmt.Errorf("sock_diag: %w", err)
	}
	// A receive timeout, so that a kernel that never answers cannot hold the apply.
	tv := unix.Timeval{Sec: 2}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("sock_diag: %w", err)
	}
	return fd, nil
}

// diagRequest is a netlink message carrying an inet_diag_req_v2 for TCP.
func diagRequest(typ, flags uint16, seq uint32, family uint8, states uint32, ext uint8, id []byte) []byte {
	msg := make([]byte, unix.NLMSG_HDRLEN+sizeofInetDiagReqV2)
	binary.NativeEndian.PutUint32(msg[0:], uint32(len(msg)))
	binary.NativeEndian.PutUint16(msg[4:], typ)
	binary.NativeEndian.PutUint16(msg[6:], flags)
	binary.NativeEndian.PutUint32(msg[8:], seq)
	r := msg[unix.NLMSG_HDRLEN:]
	r[0], r[1], r[2] = family, unix.IPPROTO_TCP, ext
	binary.NativeEndian.PutUint32(r[4:], states)
	copy(r[8:], id)
	return msg
}

// parseDiagMsg reads an inet_diag_msg and its tcp_info attribute.
func parseDiagMsg(b []byte) (tcpDial, bool) {
	if len(b) < sizeofInetDiagMsg {
		return tcpDial{}, false
	}
	d := tcpDial{family: b[0], id: append([]byte(nil), b[4:4+sizeofInetDiagSockID]...)}
	id := d.id
	d.localPort = binary.BigEndian.Uint16(id[0:])
	dport := binary.BigEndian.Uint16(id[2:])
	var ip netip.Addr
	switch d.family {
	case unix.AF_INET:
		ip = netip.AddrFrom4([4]byte(id[20:24]))
	case unix.AF_INET6:
		ip = netip.AddrFrom16([16]byte(id[20:36])).Unmap()
	default:
		return tcpDial{}, false
	}
	d.remote = netip.AddrPortFrom(ip, dport)
	for a := b[sizeofInetDiagMsg:]; len(a) >= unix.SizeofNlAttr; {
		l := int(binary.NativeEndian.Uint16(a[0:]))
		if l < unix.SizeofNlAttr || l > len(a) {
			break
		}
		if binary.NativeEndian.Uint16(a[2:]) == inetDiagInfo {
			info := a[unix.SizeofNlAttr:l]
			if len(info) < tcpInfoBytesReceived+8 {
				return tcpDial{}, false // a kernel without the byte counters
			}
			d.idle = time.Duration(binary.NativeEndian.Uint32(info[tcpInfoLastDataSent:])) * time.Millisecond
			d.rtt = time.Duration(binary.NativeEndian.Uint32(info[tcpInfoRTT:])) * time.Microsecond
			d.acked = binary.NativeEndian.Uint64(info[tcpInfoBytesAcked:])
			d.received = binary.NativeEndian.Uint64(info[tcpInfoBytesReceived:])
			return d, true
		}
		a = a[min(len(a), (l+3)&^3):]
	}
	return tcpDial{}, false
}

// nlErrno reads the error code of a netlink NLMSG_ERROR message.
func nlErrno(msg []byte) unix.Errno {
	if len(msg) < unix.NLMSG_HDRLEN+4 {
		return unix.EINVAL
	}
	return unix.Errno(-int32(binary.NativeEndian.Uint32(msg[unix.NLMSG_HDRLEN:])))
}
