package dosim

import (
	"fmt"
	"net"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/brinecm/brine/internal/lazyre"
)

var domainRE = lazyre.New(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$`)

var recordTypes = []string{"A", "AAAA", "CAA", "CNAME", "MX", "NS", "SOA", "SRV", "TXT"}

func (s *Server) listDomains(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	all := make([]Domain, 0, len(s.domains))
	for _, d := range s.domains {
		all = append(all, d.Domain)
	}
	s.mu.Unlock()
	sort.Slice(all, func(i, j int) bool { return all[i].Name < all[j].Name })
	page, l, m := paginate(r, all)
	writeJSON(w, http.StatusOK, map[string]any{"domains": page, "links": l, "meta": m})
}

func (s *Server) createDomain(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name      string `json:"name"`
		IPAddress string `json:"ip_address"`
	}
	if !decodeBody(w, r, &req) {
		return
	}
	if !domainRE.MatchString(req.Name) {
		unprocessable(w, "Name Only valid hostname characters are allowed. (a-z, A-Z, 0-9, . and -) Or a single * for wildcard subdomains.")
		return
	}
	if req.IPAddress != "" && net.ParseIP(req.IPAddress) == nil {
		unprocessable(w, "IP address is invalid.")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.domains[req.Name]; ok {
		unprocessable(w, "Name already exists")
		return
	}
	d := &domain{Domain: Domain{Name: req.Name, TTL: 1800}}
	// DigitalOcean creates the SOA and NS records with every domain, and an apex A record when an
	// address is given.
	d.records = append(d.records, s.newRecord("SOA", "@", "1800", 1800))
	for _, ns := range []string{"ns1.digitalocean.com", "ns2.digitalocean.com", "ns3.digitalocean.com"} {
		d.records = append(d.records, s.newRecord("NS", "@", ns, 1800))
	}
	if req.IPAddress != "" {
		d.records = append(d.records, s.newRecord("A", "@", req.IPAddress, 1800))
	}
	s.domains[req.Name] = d
	writeJSON(w, http.StatusCreated, map[string]any{"domain": Domain{Name: d.Name}})
}

// newRecord allocates a record id; callers hold s.mu.
func (s *Server) newRecord(typ, name, data string, ttl int) Record {
	s.nextID++
	return Record{ID: s.nextID, Type: typ, Name: name, Data: data, TTL: ttl}
}

func (s *Server) getDomain(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.domains[r.PathValue("name")]
	if !ok {
		notFound(w)
		return
	}
	out := d.Domain
	out.ZoneFile = zoneFile(d)
	writeJSON(w, http.StatusOK, map[string]any{"domain": out})
}

func zoneFile(d *domain) string {
	var b strings.Builder
	fmt.Fprintf(&b, "$ORIGIN %s.\n$TTL %d\n", d.Name, d.TTL)
	for _, r := range d.records {
		fmt.Fprintf(&b, "%s\t%d\tIN\t%s\t%s\n", r.Name, r.TTL, r.Type, r.Data)
	}
	return b.String()
}

func (s *Server) deleteDomain(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	name := r.PathValue("name")
	if _, ok := s.domains[name]; !ok {
		notFound(w)
		return
	}
	delete(s.domains, name)
	w.WriteHeader(http.StatusNoContent)
}

// fqdn is how the records list filter names a record: "www.example.com", or the domain itself
// for the apex "@".
func fqdn(rec Record, domain string) string {
	if rec.Name == "@" {
		return domain
	}
	return rec.Name + "." + domain
}

func (s *Server) listRecords(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	typ, name := q.Get("type"), q.Get("name")
	s.mu.Lock()
	d, ok := s.domains[r.PathValue("name")]
	var all []Record
	if ok {
		for _, rec := range d.records {
			// The name filter takes a fully qualified name, as documented for the API.
			if (typ == "" || rec.Type == typ) && (name == "" || fqdn(rec, d.Name) == name) {
				all = append(all, rec)
			}
		}
	}
	s.mu.Unlock()
	if !ok {
		notFound(w)
		return
	}
	page, l, m := paginate(r, all)
	writeJSON(w, http.StatusOK, map[string]any{"domain_records": nonNil(page), "links": l, "meta": m})
}

type recordRequest struct {
	Type     string  `json:"type"`
	Name     string  `json:"name"`
	Data     string  `json:"data"`
	Priority *int    `json:"priority"`
	Port     *int    `json:"port"`
	TTL      int     `json:"ttl"`
	Weight   *int    `json:"weight"`
	Flags    *int    `json:"flags"`
	Tag      *string `json:"tag"`
}

// validate checks a record as the API does and returns the message of its 422, or "".
func (q recordRequest) validate() string {
	if !slices.Contains(recordTypes, q.Type) || q.Type == "SOA" {
		return "Type is invalid."
	}
	if q.Name == "" {
		return "Name can't be blank."
	}
	if q.Data == "" {
		return "Data can't be blank."
	}
	if q.TTL != 0 && q.TTL < 30 {
		return "TTL must be at least 30 seconds."
	}
	switch q.Type {
	case "A":
		if ip := net.ParseIP(q.Data); ip == nil || ip.To4() == nil {
			return "IP address did not match IPv4 format (e.g. 127.0.0.1)."
		}
	case "AAAA":
		if ip := net.ParseIP(q.Data); ip == nil || ip.To4() != nil {
			return "IP address did not match IPv6 format."
		}
	case "MX":
		if q.Priority == nil {
			return "Priority is required for MX records."
		}
	}
	if fqdnData(q.Type) && q.Data != "@" && !strings.HasSuffix(q.Data, ".") {
		return "Data needs to end with a dot (.)"
	}
	return ""
}

// stored is how the API keeps and returns a record's data: a host name without its trailing
// dot.
func (q recordRequest) stored() string {
	if fqdnData(q.Type) && q.Data != "@" {
		return strings.TrimSuffix(q.Data, ".")
	}
	return q.Data
}

// alignTTL gives every record of rec's name and type rec's TTL: one record set, one TTL.
// Callers hold s.mu.
func alignTTL(d *domain, rec Record) {
	for i := range d.records {
		if d.records[i].Name == rec.Name && d.records[i].Type == rec.Type {
			d.records[i].TTL = rec.TTL
		}
	}
}

func (s *Server) createRecord(w http.ResponseWriter, r *http.Request) {
	var req recordRequest
	if !decodeBody(w, r, &req) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.domains[r.PathValue("name")]
	if !ok {
		notFound(w)
		return
	}
	if msg := req.validate(); msg != "" {
		unprocessable(w, msg)
		return
	}
	if req.TTL == 0 {
		req.TTL = 1800
	}
	rec := s.newRecord(req.Type, req.Name, req.stored(), req.TTL)
	rec.Priority, rec.Port, rec.Weight, rec.Flags, rec.Tag = req.Priority, req.Port, req.Weight, req.Flags, req.Tag
	d.records = append(d.records, rec)
	alignTTL(d, rec)
	writeJSON(w, http.StatusCreated, map[string]any{"domain_record": rec})
}

func (s *Server) recordByPath(w http.ResponseWriter, r *http.Request) (*domain, int, bool) {
	d, ok := s.domains[r.PathValue("name")]
	if !ok {
		notFound(w)
		return nil, 0, false
	}
	id, _ := strconv.Atoi(r.PathValue("id"))
	for i, rec := range d.records {
		if rec.ID == id {
			return d, i, true
		}
	}
	notFound(w)
	return nil, 0, false
}

func (s *Server) getRecord(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, i, ok := s.recordByPath(w, r)
	if ok {
		writeJSON(w, http.StatusOK, map[string]any{"domain_record": d.records[i]})
	}
}

func (s *Server) editRecord(w http.ResponseWriter, r *http.Request) {
	var req recordRequest
	if !decodeBody(w, r, &req) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d, i, ok := s.recordByPath(w, r)
	if !ok {
		return
	}
	rec := d.records[i]
	// Fields left out keep their value (godo sends omitempty fields). Kept host-name data is
	// valid as it is stored.
	data := rec.Data
	if fqdnData(rec.Type) && data != "@" {
		data += "."
	}
	merged := recordRequest{Type: rec.Type, Name: rec.Name, Data: data, TTL: rec.TTL,
		Priority: rec.Priority, Port: rec.Port, Weight: rec.Weight, Flags: rec.Flags, Tag: rec.Tag}
	if req.Type != "" && req.Type != rec.Type {
		unprocessable(w, "Type cannot be changed.")
		return
	}
	if req.Name != "" {
		merged.Name = req.Name
	}
	if req.Data != "" {
		merged.Data = req.Data
	}
	if req.TTL != 0 {
		merged.TTL = req.TTL
	}
	if rec.Type == "SOA" {
		unprocessable(w, "SOA records cannot be edited.")
		return
	}
	if msg := merged.validate(); msg != "" {
		unprocessable(w, msg)
		return
	}
	rec.Name, rec.Data, rec.TTL = merged.Name, merged.stored(), merged.TTL
	d.records[i] = rec
	if req.TTL != 0 {
		alignTTL(d, rec)
	}
	writeJSON(w, http.StatusOK, map[string]any{"domain_record": rec})
}

func (s *Server) deleteRecord(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, i, ok := s.recordByPath(w, r)
	if !ok {
		return
	}
	d.records = slices.Delete(d.records, i, i+1)
	w.WriteHeader(http.StatusNoContent)
}
