package cloud

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strings"

	"github.com/brinecm/brine/internal/lazyre"
	"github.com/digitalocean/godo"
)

// DNSRecord is one record of a domain; Name is relative to the domain ("@" for the apex).
type DNSRecord struct {
	ID   int    `json:"id"`
	Type string `json:"type"`
	Name string `json:"name"`
	Data string `json:"data"`
	TTL  int    `json:"ttl"`
}

func recordFromGodo(r godo.DomainRecord) DNSRecord {
	return DNSRecord{ID: r.ID, Type: r.Type, Name: r.Name, Data: r.Data, TTL: r.TTL}
}

// DNSSetRequest makes NAME TYPE in Domain resolve to Value alone.
type DNSSetRequest struct {
	Domain string
	Name   string // relative ("www") or "@"
	Type   string // A, AAAA, CNAME, TXT
	Value  string
	TTL    int // zero means 300 for a new record, unchanged for an existing one
	DryRun bool
}

// DNSChange says what DNSSet did (or would do).
type DNSChange struct {
	DryRun bool `json:"dry_run"`
	// Action is "create", "update" or "unchanged".
	Action string    `json:"action"`
	Record DNSRecord `json:"record"`
	// Previous is the record before an update: a rollback is DNSSet with its value.
	Previous *DNSRecord `json:"previous,omitempty"`
	// Removed are other records of the same name and type, deleted so the name has one value.
	Removed []DNSRecord `json:"removed"`
}

var dnsTypes = map[string]bool{"A": true, "AAAA": true, "CNAME": true, "TXT": true}

// hostData reports whether a record type's data is a host name. DigitalOcean wants such data
// sent fully qualified, with its trailing dot (a 422 "Data needs to end with a dot (.)"
// otherwise), and returns it without the dot (terraform-provider-digitalocean's
// domain/resource_record.go adds it back on read). brine compares it without the dot, sends it
// with, and reports it as the API returns it, so that a rollback can send the previous value as
// reported.
func hostData(typ string) bool {
	switch typ {
	case "CNAME", "MX", "NS", "SRV":
		return true
	}
	return false
}

// sameData compares record data as DigitalOcean means it.
func sameData(typ, a, b string) bool {
	if hostData(typ) {
		return strings.EqualFold(strings.TrimSuffix(a, "."), strings.TrimSuffix(b, "."))
	}
	return a == b
}

// hostnameRE is a host name as record data: labels of letters, digits, '-' and '_'.
var hostnameRE = lazyre.New(`^([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\.?$`)

// DNSSet makes Name Type point at Value through DigitalOcean's Domains API: it updates the
// existing record, or creates one, and deletes any other record of that name and type, so a
// cut-over is one call and a rollback another.
func (c *Client) DNSSet(ctx context.Context, req DNSSetRequest) (*DNSChange, error) {
	typ := strings.ToUpper(req.Type)
	if !dnsTypes[typ] {
		return nil, fmt.Errorf("dns set: record type %q is not supported; use A, AAAA, CNAME or TXT", req.Type)
	}
	name := strings.TrimSuffix(req.Name, "."+req.Domain)
	if name == req.Domain || name == "" {
		name = "@"
	}
	switch typ {
	case "A":
		if ip := net.ParseIP(req.Value); ip == nil || ip.To4() == nil {
			return nil, fmt.Errorf("dns set: %q is not an IPv4 address", req.Value)
		}
	case "AAAA":
		if ip := net.ParseIP(req.Value); ip == nil || ip.To4() != nil {
			return nil, fmt.Errorf("dns set: %q is not an IPv6 address", req.Value)
		}
	case "CNAME":
		if req.Value != "@" && (!hostnameRE.MatchString(req.Value) || len(req.Value) > 254) {
			return nil, fmt.Errorf("dns set: %q is not a host name", req.Value)
		}
	}
	// What is sent: host names fully qualified; what is reported: as the API returns it.
	send, shown := req.Value, req.Value
	if hostData(typ) && req.Value != "@" {
		shown = strings.TrimSuffix(req.Value, ".")
		send = shown + "."
	}
	if req.TTL != 0 && req.TTL < 30 {
		return nil, fmt.Errorf("dns set: ttl %d is below DigitalOcean's minimum of 30 seconds", req.TTL)
	}
	// The API's name filter takes the fully qualified name.
	fq := req.Domain
	if name != "@" {
		fq = name + "." + req.Domain
	}
	var existing []godo.DomainRecord
	opt := &godo.ListOptions{Page: 1, PerPage: 200}
	for {
		page, resp, err := c.do.Domains.RecordsByTypeAndName(ctx, req.Domain, typ, fq, opt)
		if err != nil {
			return nil, fmt.Errorf("dns set: list %s records of %s: %w", typ, fq, err)
		}
		existing = append(existing, page...)
		if resp.Links == nil || resp.Links.IsLastPage() || len(page) == 0 {
			break
		}
		opt.Page++
		if opt.Page > maxListPages {
			return nil, fmt.Errorf("dns set: list %s records of %s: %w", typ, fq, errTooManyPages)
		}
	}
	sort.Slice(existing, func(i, j int) bool { return existing[i].ID < existing[j].ID })
	ch := &DNSChange{DryRun: req.DryRun, Removed: []DNSRecord{}}
	edit := &godo.DomainRecordEditRequest{Type: typ, Name: name, Data: send, TTL: req.TTL}
	if len(existing) == 0 {
		if edit.TTL == 0 {
			edit.TTL = 300
		}
		ch.Action = "create"
		ch.Record = DNSRecord{Type: typ, Name: name, Data: shown, TTL: edit.TTL}
		if !req.DryRun {
			r, _, err := c.do.Domains.CreateRecord(ctx, req.Domain, edit)
			if err != nil {
				return nil, fmt.Errorf("dns set: create %s %s: %w", fq, typ, err)
			}
			ch.Record = recordFromGodo(*r)
		}
	} else {
		cur := existing[0]
		prev := recordFromGodo(cur)
		ch.Previous = &prev
		ch.Record = prev
		ch.Record.Data = shown
		if req.TTL != 0 {
			ch.Record.TTL = req.TTL
		}
		ch.Action = "update"
		if sameData(typ, cur.Data, req.Value) && (req.TTL == 0 || cur.TTL == req.TTL) {
			ch.Action = "unchanged"
		}
		if ch.Action == "update" && !req.DryRun {
			r, _, err := c.do.Domains.EditRecord(ctx, req.Domain, cur.ID, edit)
			if err != nil {
				return nil, fmt.Errorf("dns set: update %s %s: %w", fq, typ, err)
			}
			ch.Record = recordFromGodo(*r)
		}
	}
	for _, extra := range existing[min(1, len(existing)):] {
		ch.Removed = append(ch.Removed, recordFromGodo(extra))
		if !req.DryRun {
			if _, err := c.do.Domains.DeleteRecord(ctx, req.Domain, extra.ID); err != nil && !isStatus(err, 404) {
				return ch, fmt.Errorf("dns set: remove the extra %s record %d of %s: %w", typ, extra.ID, fq, err)
			}
		}
	}
	c.log.Info("dns set", "domain", req.Domain, "name", name, "type", typ, "action", ch.Action, "dry_run", req.DryRun)
	return ch, nil
}

// DNSList returns every record of a domain, sorted by name, type and id.
func (c *Client) DNSList(ctx context.Context, domain string) ([]DNSRecord, error) {
	var out []DNSRecord
	opt := &godo.ListOptions{Page: 1, PerPage: 200}
	for {
		page, resp, err := c.do.Domains.Records(ctx, domain, opt)
		if err != nil {
			return nil, fmt.Errorf("dns list %s: %w", domain, err)
		}
		for _, r := range page {
			out = append(out, recordFromGodo(r))
		}
		if resp.Links == nil || resp.Links.IsLastPage() || len(page) == 0 {
			break
		}
		opt.Page++
		if opt.Page > maxListPages {
			return nil, fmt.Errorf("dns list %s: %w", domain, errTooManyPages)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		if a.Type != b.Type {
			return a.Type < b.Type
		}
		return a.ID < b.ID
	})
	if out == nil {
		out = []DNSRecord{}
	}
	return out, nil
}
