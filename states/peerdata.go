package states

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// This file holds what resources use to take values that may come from a minion (a peer's facts
// through peers(), or the host's own facts) without trusting their text: typed parsers for
// addresses and keys, and the rule that a bad value of that kind fails one resource on one host
// rather than the whole bundle everywhere.

// CheckData reports whether v (JSON-shaped data: facts, peers) converts to a language value, as
// minion.facts and peers() do. It never panics: go-cty panics on object keys that are equal after
// Unicode normalisation, and this is where the master finds out before a bundle does.
func CheckData(v any) error {
	_, err := toCty(v)
	return err
}

// FromBundle reports whether expr's value is fixed by the bundle and the operator alone: literals
// and var.* references, with no function call (peers(), file(), ...) and no other reference
// (minion facts, locals, for_each and dynamic block iterators). A bad value in such an expression
// is the author's mistake and a compile error; in any other it may be a minion's data, and a bad
// one fails only the resource on the host that renders it (see Faulty).
func FromBundle(expr hcl.Expression) bool {
	if w, ok := expr.(sensitiveExpr); ok {
		expr = w.Expression // the value is unmarked for the type; the syntax is the same
	}
	se, ok := expr.(hclsyntax.Expression)
	if !ok {
		return false // wrapped by a dynamic block: its iterator's values are data
	}
	static := true
	_ = hclsyntax.VisitAll(se, func(n hclsyntax.Node) hcl.Diagnostics {
		switch x := n.(type) {
		case *hclsyntax.FunctionCallExpr:
			static = false
		case *hclsyntax.ScopeTraversalExpr:
			if x.Traversal.RootName() != "var" {
				static = false
			}
		}
		return nil
	})
	return static
}

// AttrFromBundle is FromBundle for the attribute name of body; an attribute that is not set is
// from the bundle (its default is).
func AttrFromBundle(body hcl.Body, name string) bool {
	attrs, _ := body.JustAttributes()
	if a, ok := attrs[name]; ok {
		return FromBundle(a.Expr)
	}
	content, _, _ := body.PartialContent(&hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: name}}})
	if content != nil {
		if a, ok := content.Attributes[name]; ok {
			return FromBundle(a.Expr)
		}
	}
	return true
}

// Faulty stands for a resource whose configuration holds a bad value that came from data, not
// from the bundle's text: the bundle compiles, for this host and every other, and the resource
// fails here, in its check, with the reason. One minion's malformed address or key thus costs the
// resources that would have used it on the hosts that render them, never the fleet's bundle.
type Faulty struct{ Err error }

func (f *Faulty) Check(context.Context, *Env) (string, error) { return "", f.Err }
func (f *Faulty) Apply(context.Context, *Env) error           { return f.Err }

// DataFault turns diagnostics about data into a Faulty resource's error.
func DataFault(what string, diags hcl.Diagnostics) *Faulty {
	var msgs []string
	for _, d := range diags {
		if d.Severity == hcl.DiagError {
			msgs = append(msgs, strings.TrimSuffix(d.Summary+": "+d.Detail, "."))
		}
	}
	return &Faulty{Err: fmt.Errorf("%s: refused data that is not valid (nothing was changed): %s", what, strings.Join(msgs, "; "))}
}

// ParseTincPublicKey parses a tinc 1.0 public key: exactly one PEM block of type "RSA PUBLIC KEY"
// with no headers and nothing but white space around it, holding a PKCS#1 RSA key of 1024 to 8192
// bits. It returns the key encoded afresh, so that only the key itself, never text that came with
// it, reaches a hosts file.
func ParseTincPublicKey(s string) (string, error) {
	if len(s) > 16<<10 {
		return "", errors.New("longer than any RSA public key")
	}
	blk, rest := pem.Decode([]byte(strings.TrimSpace(s)))
	if blk == nil {
		return "", errors.New("not a PEM block")
	}
	// pem.Decode skips text before the block: the block must be where the value starts.
	if !strings.HasPrefix(strings.TrimSpace(s), "-----BEGIN ") {
		return "", errors.New("text before the PEM block")
	}
	if len(strings.TrimSpace(string(rest))) > 0 {
		return "", errors.New("text after the PEM block")
	}
	if blk.Type != "RSA PUBLIC KEY" {
		return "", fmt.Errorf("a %q PEM block, not \"RSA PUBLIC KEY\" (tinc 1.0's key format)", blk.Type)
	}
	if len(blk.Headers) > 0 {
		return "", errors.New("PEM headers in the block")
	}
	k, err := x509.ParsePKCS1PublicKey(blk.Bytes)
	if err != nil {
		return "", fmt.Errorf("not a PKCS#1 RSA public key: %v", err)
	}
	if n := k.N.BitLen(); n < 1024 || n > 8192 {
		return "", fmt.Errorf("a %d-bit key; tinc keys are 1024 to 8192 bits", n)
	}
	return EncodeTincPublicKey(k), nil
}

// ParseHostAddress parses a host to connect to: one IP address (without a zone) or one DNS name.
func ParseHostAddress(s string) (string, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Zone() != "" {
			return "", errors.New("an address with a zone")
		}
		return a.String(), nil
	}
	if hostName(s, 63, "") && strings.ContainsFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '.' }) {
		return s, nil
	}
	return "", errors.New("not one IP address or host name")
}

// ParseRuleAddr parses the source or destination of a firewall rule: one address (a host) or one
// network. The network of every address (0.0.0.0/0, ::/0) is refused: a rule for everyone says
// "any" (or leaves the side out), so that no value meant as one host can open a rule to the
// world. It returns the canonical form (a host without its prefix length, a network with its host
// bits cleared) and whether it is IPv6.
func ParseRuleAddr(s string) (canon string, is6 bool, err error) {
	if p, perr := netip.ParsePrefix(s); perr == nil {
		if p.Addr().Zone() != "" {
			return "", false, errors.New("an address with a zone")
		}
		if p.Bits() == 0 {
			return "", false, errors.New(`a network of every address; write "any" for a rule that matches everyone`)
		}
		if p.IsSingleIP() {
			return p.Addr().String(), p.Addr().Is6(), nil
		}
		return p.Masked().String(), p.Addr().Is6(), nil
	}
	if a, aerr := netip.ParseAddr(s); aerr == nil && a.Zone() == "" {
		return a.String(), a.Is6(), nil
	}
	return "", false, errors.New("not one address (\"10.0.0.5\") or network (\"10.0.0.0/8\")")
}

// EncodeTincPublicKey is k as tinc 1.0 writes it: one PEM block of type "RSA PUBLIC KEY".
func EncodeTincPublicKey(k *rsa.PublicKey) string {
	return strings.TrimSpace(string(pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(k)})))
}
