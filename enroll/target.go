// Package enroll makes servers that already run into minions over SSH: it verifies the
// server's host key, uploads the brine binary (checked by sha256 on the server), writes
// /etc/brine/minion.hcl with a single-use enrolment token for that server alone, installs and
// starts the brine-minion systemd unit, and waits until the master reports it enrolled.
package enroll

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/brinecm/brine/pki"
)

// Target is one server to enrol, from an ssh://USER@HOST[:PORT][?id=ID] URL.
type Target struct {
	// URL is the target as given, for messages.
	URL string
	// User is the SSH user; it must be root (the minion manages the whole host).
	User string
	// Host and Port are where sshd listens (Port 22 when not given).
	Host string
	Port int
	// ID is the minion id to enrol as; empty means the server's host name.
	ID string
}

// Addr is host:port for dialling and for known_hosts.
func (t Target) Addr() string { return net.JoinHostPort(t.Host, strconv.Itoa(t.Port)) }

// ParseTarget reads ssh://root@HOST[:PORT][?id=ID]. Only root is accepted: installing the
// binary and the unit needs it, and a sudo step would need a password on the way.
func ParseTarget(s string) (Target, error) {
	u, err := url.Parse(s)
	if err != nil {
		return Target{}, fmt.Errorf("target %q: %w", s, err)
	}
	if u.Scheme != "ssh" || u.Host == "" || u.Opaque != "" {
		return Target{}, fmt.Errorf("target %q: want ssh://root@HOST[:PORT]", s)
	}
	if u.Path != "" && u.Path != "/" || u.Fragment != "" {
		return Target{}, fmt.Errorf("target %q: an ssh:// target has no path", s)
	}
	t := Target{URL: s, Host: u.Hostname(), Port: 22}
	if u.User != nil {
		if _, has := u.User.Password(); has {
			return Target{}, fmt.Errorf("target %q: no passwords in the URL: use --identity or ssh-agent", s)
		}
		t.User = u.User.Username()
	}
	if t.User != "root" {
		return Target{}, fmt.Errorf("target %q: the user must be root (ssh://root@%s): installing the minion needs it", s, t.Host)
	}
	if t.Host == "" || strings.ContainsAny(t.Host, " \t\n/") {
		return Target{}, fmt.Errorf("target %q: no host", s)
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return Target{}, fmt.Errorf("target %q: bad port %q", s, p)
		}
		t.Port = n
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return Target{}, fmt.Errorf("target %q: %w", s, err)
	}
	for k, v := range q {
		if k != "id" || len(v) != 1 {
			return Target{}, fmt.Errorf("target %q: unknown or repeated parameter %q (only ?id=MINION-ID)", s, k)
		}
		if !pki.ValidID(v[0]) {
			return Target{}, fmt.Errorf("target %q: invalid minion id %q (^[a-z0-9][a-z0-9.-]{0,62}$)", s, v[0])
		}
		t.ID = v[0]
	}
	return t, nil
}
