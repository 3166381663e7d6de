// Package icmp pings: ICMP echo requests and their replies on a raw socket (root), for the
// resources that check a data path and for their tests.
package icmp

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// Pinger sends ICMP echo requests and reads their replies, on a raw socket (root).
type Pinger struct {
	fd   int
	v4   bool
	id   uint16
	seq  uint16
	sent map[uint16]netip.Addr
}

// New opens a raw ICMP socket for IPv4 (v4) or ICMPv6.
func New(v4 bool) (*Pinger, error) {
	family, proto := unix.AF_INET, unix.IPPROTO_ICMP
	if !v4 {
		family, proto = unix.AF_INET6, unix.IPPROTO_ICMPV6
	}
	fd, err := unix.Socket(family, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return nil, err
	}
	return &Pinger{fd: fd, v4: v4, id: uint16(rand.Uint32()), sent: map[uint16]netip.Addr{}}, nil
}

func (p *Pinger) Close() { unix.Close(p.fd) }

// Send sends one echo request to ip; errors are the same as no answer.
func (p *Pinger) Send(ip netip.Addr) {
	p.seq++
	msg := make([]byte, 16)
	msg[0] = 8 // echo request
	if !p.v4 {
		msg[0] = 128 // the kernel computes ICMPv6 checksums
	}
	binary.BigEndian.PutUint16(msg[4:], p.id)
	binary.BigEndian.PutUint16(msg[6:], p.seq)
	copy(msg[8:], "brine-dp")
	var to unix.Sockaddr
	if p.v4 {
		binary.BigEndian.PutUint16(msg[2:], icmpChecksum(msg))
		to = &unix.SockaddrInet4{Addr: ip.As4()}
	} else {
		to = &unix.SockaddrInet6{Addr: ip.As16()}
	}
	if unix.Sendto(p.fd, msg, 0, to) == nil {
		p.sent[p.seq] = ip
	}
}

// Await removes from pending the addresses that answer an echo request of p, reading until
// none is left or for wait at most.
func (p *Pinger) Await(pending map[netip.Addr]string, wait time.Duration) {
	buf := make([]byte, 1500)
	for deadline := time.Now().Add(wait); len(pending) > 0; {
		left := time.Until(deadline)
		if left <= 0 {
			return
		}
		tv := unix.NsecToTimeval(left.Nanoseconds())
		if unix.SetsockoptTimeval(p.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv) != nil {
			return
		}
		k, from, err := unix.Recvfrom(p.fd, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return
		}
		msg := buf[:k]
		reply := byte(129)
		if p.v4 { // a raw IPv4 socket reads the IP header too
			if len(msg) < 20 || int(msg[0]&0x0f)*4 > len(msg) {
				continue
			}
			msg, reply = msg[int(msg[0]&0x0f)*4:], 0
		}
		if len(msg) < 8 || msg[0] != reply || binary.BigEndian.Uint16(msg[4:]) != p.id {
			continue
		}
		if ip, ok := p.sent[binary.BigEndian.Uint16(msg[6:])]; ok && sockaddrIs(from, ip) {
			delete(pending, ip)
		}
	}
}

// icmpChecksum is the Internet checksum (RFC 1071) of b.
func icmpChecksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

func sockaddrIs(sa unix.Sockaddr, ip netip.Addr) bool {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrFrom4(a.Addr) == ip
	case *unix.SockaddrInet6:
		return netip.AddrFrom16(a.Addr).Unmap() == ip
	}
	return false
}
