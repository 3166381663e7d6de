package ufw

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Enabling a stateful firewall on a host whose netfilter never tracked connections cuts the
// connections the host opened before, one direction at a time. The kernel registers connection
// tracking in a network namespace only when a ruleset first needs it (ufw's, at `ufw enable`), so
// the table knows nothing of connections that were already open. ufw accepts incoming packets
// only for ESTABLISHED or RELATED flows, and a packet of an unknown flow is NEW (with
// nf_conntrack_tcp_loose the kernel picks the flow up mid-stream, but as a new one, whose first
// packet still has to pass the rules): every incoming packet of an outgoing connection is dropped
// until the host itself sends on it, which makes the kernel record the flow in the right
// direction. A connection the host only reads from stays deaf until a TCP keepalive probe goes out
// (after 15 s idle, Go's default): the minion's subscription to the master's publisher (port
// 4505) missed the jobs of that time, and the minion timed out with "no heartbeat from the master"
// and reconnected.
//
// trackOpenFlows writes those connections into the table before the firewall comes up, as the
// kernel would have recorded them had it tracked them from their SYN: only connections this host
// opened (its local port is not one it listens on), so that incoming connections are still judged
// by the new rules.

// Netlink constants of ctnetlink (linux/netfilter/nfnetlink_conntrack.h and friends); x/sys/unix
// does not define them.
const (
	nfnlSubsysCtnetlink = 1
	ipctnlMsgCtNew      = 0

	ctaTupleOrig  = 1
	ctaTupleReply = 2
	ctaStatus     = 3
	ctaProtoinfo  = 4
	ctaTimeout    = 7

	ipsSeenReply = 1 << 1
	ipsAssured   = 1 << 2
	ipsConfirmed = 1 << 3

	ctaTupleIP    = 1
	ctaTupleProto = 2

	ctaIPv4Src = 1
	ctaIPv4Dst = 2
	ctaIPv6Src = 3
	ctaIPv6Dst = 4

	ctaProtoNum     = 1
	ctaProtoSrcPort = 2
	ctaProtoDstPort = 3

	ctaProtoinfoTCP              = 1
	ctaProtoinfoTCPState         = 1
	ctaProtoinfoTCPFlagsOriginal = 4
	ctaProtoinfoTCPFlagsReply    = 5

	tcpConntrackEstablished = 3
	// The window scale each side announced in its SYN is unknown for a connection the table did
	// not see open: like the kernel for a flow it picks up mid-stream (nf_conntrack_tcp_loose),
	// check its sequence numbers liberally, so that no valid segment is judged INVALID, which
	// ufw drops.
	ipCtTCPFlagSackPerm  = 0x02
	ipCtTCPFlagBeLiberal = 0x08

	nlaFNested = 0x8000

	// maxTrackedFlows bounds the work on a host with very many connections.
	maxTrackedFlows = 1 << 16
)

// tcpFlow is one established TCP connection, from this host's side.
type tcpFlow struct {
	local, remote netip.AddrPort
}

// outgoingFlows returns the established TCP connections that this host opened, from the socket
// tables of its network namespace (/proc/net/tcp and tcp6): those whose local port no listening
// socket holds.
func outgoingFlows() ([]tcpFlow, error) {
	var est []tcpFlow
	listening := map[uint16]bool{}
	for _, name := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(name)
		if errors.Is(err, os.ErrNotExist) {
			continue // no IPv6
		}
		if err != nil {
			return nil, err
		}
		err = readSocketTable(f, func(local, remote netip.AddrPort, state string) {
			switch state {
			case "0A": // LISTEN
				listening[local.Port()] = true
			case "01": // ESTABLISHED
				if len(est) < maxTrackedFlows {
					est = append(est, tcpFlow{local: local, remote: remote})
				}
			}
		})
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	out := est[:0]
	for _, fl := range est {
		if !listening[fl.local.Port()] && !fl.local.Addr().IsLoopback() {
			out = append(out, fl)
		}
	}
	return out, nil
}

// readSocketTable calls row for each socket of a /proc/net/tcp{,6} table.
func readSocketTable(r io.Reader, row func(local, remote netip.AddrPort, state string)) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 4096)
	sc.Scan() // the header
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 {
			continue
		}
		local, err1 := parseProcAddr(f[1])
		remote, err2 := parseProcAddr(f[2])
		if err1 != nil || err2 != nil {
			return fmt.Errorf("unexpected line %q", sc.Text())
		}
		row(local, remote, f[3])
	}
	return sc.Err()
}

// parseProcAddr reads an "ADDR:PORT" of /proc/net/tcp{,6}: the address as the kernel holds it,
// printed as 32-bit words in host (little-endian) byte order, the port in hex.
func parseProcAddr(s string) (netip.AddrPort, error) {
	a, p, ok := strings.Cut(s, ":")
	if !ok || (len(a) != 8 && len(a) != 32) {
		return netip.AddrPort{}, fmt.Errorf("bad address %q", s)
	}
	raw, err := hex.DecodeString(a)
	if err != nil {
		return netip.AddrPort{}, err
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, err
	}
	for i := 0; i < len(raw); i += 4 {
		raw[i], raw[i+1], raw[i+2], raw[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	addr, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(addr.Unmap(), uint16(port)), nil
}

// trackOpenFlows records every connection this host opened in the kernel's connection tracking
// table as established, so that a stateful firewall coming up lets their replies in. A connection
// already in the table is only marked as answered (see ctNewMsg). It returns how many it recorded.
func trackOpenFlows() (int, error) {
	flows, err := outgoingFlows()
	if err != nil || len(flows) == 0 {
		return 0, err
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return 0, fmt.Errorf("netlink: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, fmt.Errorf("netlink: %w", err)
	}
	// A receive timeout, so that a kernel that never answers cannot hold the apply.
	tv := unix.Timeval{Sec: 5}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return 0, err
	}
	timeout := uint32(432000) // the kernel's default for an established TCP flow: 5 days
	if b, err := os.ReadFile("/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established"); err == nil {
		if v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32); err == nil && v > 0 {
			timeout = uint32(v)
		}
	}
	n := 0
	buf := make([]byte, 8192)
	seq := uint32(0)
	request := func(msg []byte) (unix.Errno, error) {
		if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			return 0, fmt.Errorf("netlink send: %w", err)
		}
		return nlAck(fd, buf, seq)
	}
	for _, fl := range flows {
		seq++
		errno, err := request(ctNewMsg(fl, timeout, seq, false))
		if err == nil && errno == unix.EEXIST {
			// Tracked already, but maybe picked up from the peer's side and never seen to
			// answer: see ctNewMsg. Mark it answered.
			seq++
			errno, err = request(ctNewMsg(fl, timeout, seq, true))
			if errno == unix.ENOENT || errno == unix.EBUSY || errno == unix.ETIME {
				errno = 0 // closed or closing meanwhile
			}
		} else if err == nil && errno == 0 {
			n++
		}
		if err != nil {
			return n, err
		}
		if errno != 0 {
			return n, fmt.Errorf("recording %s -> %s in the connection tracking table: %w", fl.local, fl.remote, errno)
		}
	}
	return n, nil
}

// nlAck reads netlink messages until the acknowledgement of request seq and returns its errno.
func nlAck(fd int, buf []byte, seq uint32) (unix.Errno, error) {
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return 0, fmt.Errorf("netlink receive: %w", err)
		}
		for b := buf[:n]; len(b) >= unix.NLMSG_HDRLEN; {
			l := int(binary.NativeEndian.Uint32(b[0:]))
			if l < unix.NLMSG_HDRLEN || l > len(b) {
				return 0, errors.New("netlink receive: malformed message")
			}
			typ, mseq := binary.NativeEndian.Uint16(b[4:]), binary.NativeEndian.Uint32(b[8:])
			if typ == unix.NLMSG_ERROR && mseq == seq && l >= unix.NLMSG_HDRLEN+4 {
				code := int32(binary.NativeEndian.Uint32(b[unix.NLMSG_HDRLEN:]))
				return unix.Errno(-code), nil
			}
			b = b[min(len(b), (l+3)&^3):]
		}
	}
}

// ctNewMsg is the ctnetlink request that creates an established entry for fl, with the host as
// the side that opened it. It sets no status bits: the kernel sets SEEN_REPLY and ASSURED itself at
// the first packets both ways, as for a flow it picked up mid-stream, and kernels differ in which
// bits a new entry may be given.
//
// With update, it marks the entry that tracks fl already, whichever way round, as one that has
// seen both directions, and changes nothing else (its state, window checks and timeout stay the
// kernel's). Debian's ufw registers connection tracking in
// the namespace for a moment while it is still disabled (`ufw allow` probes its iptables'
// matches), and the kernel then picks up whatever flow sends a packet, mid-stream and from that
// packet's side. A flow the host only reads from is picked up from the peer's side, and if the
// host did not answer before the probe's rules were gone the entry stays as the kernel left it,
// unanswered. Once ufw is enabled, every packet the peer sends in that direction is then NEW,
// not ESTABLISHED, and is dropped: the host never receives it, never answers, and the
// connection stays deaf (the demo's minions, 1 run in 15, "no heartbeat from the master").
// SEEN_REPLY and ASSURED can be set on an existing entry, not cleared; CONFIRMED, which every
// entry in the table has, cannot change, and older kernels refuse a status without it (EBUSY)
// where newer ones ignore it.
func ctNewMsg(fl tcpFlow, timeout, seq uint32, update bool) []byte {
	family := byte(unix.AF_INET)
	src, dst := ctaIPv4Src, ctaIPv4Dst
	if fl.local.Addr().Is6() {
		family, src, dst = unix.AF_INET6, ctaIPv6Src, ctaIPv6Dst
	}
	tuple := func(from, to netip.AddrPort) []byte {
		var ip, proto []byte
		ip = nlAttr(ip, uint16(src), from.Addr().AsSlice())
		ip = nlAttr(ip, uint16(dst), to.Addr().AsSlice())
		proto = nlAttr(proto, ctaProtoNum, []byte{unix.IPPROTO_TCP})
		proto = nlAttr(proto, ctaProtoSrcPort, binary.BigEndian.AppendUint16(nil, from.Port()))
		proto = nlAttr(proto, ctaProtoDstPort, binary.BigEndian.AppendUint16(nil, to.Port()))
		var t []byte
		t = nlAttr(t, ctaTupleIP|nlaFNested, ip)
		return nlAttr(t, ctaTupleProto|nlaFNested, proto)
	}
	liberal := []byte{ipCtTCPFlagBeLiberal | ipCtTCPFlagSackPerm, ipCtTCPFlagBeLiberal | ipCtTCPFlagSackPerm} // flags, mask
	var tcp []byte
	tcp = nlAttr(tcp, ctaProtoinfoTCPState, []byte{tcpConntrackEstablished})
	tcp = nlAttr(tcp, ctaProtoinfoTCPFlagsOriginal, liberal)
	tcp = nlAttr(tcp, ctaProtoinfoTCPFlagsReply, liberal)
	body := []byte{family, 0 /* NFNETLINK_V0 */, 0, 0 /* res_id */}
	body = nlAttr(body, ctaTupleOrig|nlaFNested, tuple(fl.local, fl.remote))
	flags := uint16(unix.NLM_F_REQUEST | unix.NLM_F_ACK)
	if update {
		body = nlAttr(body, ctaStatus, binary.BigEndian.AppendUint32(nil, ipsSeenReply|ipsAssured|ipsConfirmed))
	} else {
		body = nlAttr(body, ctaTupleReply|nlaFNested, tuple(fl.remote, fl.local))
		body = nlAttr(body, ctaTimeout, binary.BigEndian.AppendUint32(nil, timeout))
		body = nlAttr(body, ctaProtoinfo|nlaFNested, nlAttr(nil, ctaProtoinfoTCP|nlaFNested, tcp))
		flags |= unix.NLM_F_CREATE | unix.NLM_F_EXCL
	}

	msg := make([]byte, unix.NLMSG_HDRLEN, unix.NLMSG_HDRLEN+len(body))
	binary.NativeEndian.PutUint32(msg[0:], uint32(unix.NLMSG_HDRLEN+len(body)))
	binary.NativeEndian.PutUint16(msg[4:], nfnlSubsysCtnetlink<<8|ipctnlMsgCtNew)
	binary.NativeEndian.PutUint16(msg[6:], flags)
	binary.NativeEndian.PutUint32(msg[8:], seq)
	return append(msg, body...)
}

// nlAttr appends a netlink attribute (length, type, value, padding to 4 bytes) to b.
func nlAttr(b []byte, typ uint16, val []byte) []byte {
	b = binary.NativeEndian.AppendUint16(b, uint16(unix.SizeofNlAttr+len(val)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, val...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}
