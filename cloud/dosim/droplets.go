package dosim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/brinecm/brine/internal/lazyre"
)

func (s *Server) routes() {
	m := http.NewServeMux()
	m.HandleFunc("GET /v2/droplets", s.listDroplets)
	m.HandleFunc("POST /v2/droplets", s.createDroplets)
	m.HandleFunc("DELETE /v2/droplets", s.deleteDropletsByTag)
	m.HandleFunc("GET /v2/droplets/{id}", s.getDroplet)
	m.HandleFunc("DELETE /v2/droplets/{id}", s.deleteDroplet)
	m.HandleFunc("POST /v2/droplets/{id}/actions", s.postDropletAction)
	m.HandleFunc("GET /v2/droplets/{id}/actions", s.listDropletActions)
	m.HandleFunc("GET /v2/droplets/{id}/actions/{aid}", s.getDropletAction)
	m.HandleFunc("GET /v2/actions", s.listActions)
	m.HandleFunc("GET /v2/actions/{id}", s.getAction)
	m.HandleFunc("GET /v2/account", s.getAccount)
	m.HandleFunc("GET /v2/account/keys", s.listKeys)
	m.HandleFunc("POST /v2/account/keys", s.createKey)
	m.HandleFunc("GET /v2/account/keys/{key}", s.getKey)
	m.HandleFunc("DELETE /v2/account/keys/{key}", s.deleteKey)
	m.HandleFunc("GET /v2/regions", s.listRegions)
	m.HandleFunc("GET /v2/sizes", s.listSizes)
	m.HandleFunc("GET /v2/images", s.listImages)
	m.HandleFunc("GET /v2/images/{image}", s.getImage)
	m.HandleFunc("GET /v2/domains", s.listDomains)
	m.HandleFunc("POST /v2/domains", s.createDomain)
	m.HandleFunc("GET /v2/domains/{name}", s.getDomain)
	m.HandleFunc("DELETE /v2/domains/{name}", s.deleteDomain)
	m.HandleFunc("GET /v2/domains/{name}/records", s.listRecords)
	m.HandleFunc("POST /v2/domains/{name}/records", s.createRecord)
	m.HandleFunc("GET /v2/domains/{name}/records/{id}", s.getRecord)
	m.HandleFunc("PUT /v2/domains/{name}/records/{id}", s.editRecord)
	m.HandleFunc("PATCH /v2/domains/{name}/records/{id}", s.editRecord)
	m.HandleFunc("DELETE /v2/domains/{name}/records/{id}", s.deleteRecord)
	m.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { notFound(w) })
	s.mux = m
}

// paginate cuts items to the requested page and builds links.pages and meta as DigitalOcean
// does: per_page defaults to 20 and is capped at 200; next/last only when there is a next page,
// first/prev only after the first page.
func paginate[T any](r *http.Request, items []T) ([]T, links, meta) {
	q := r.URL.Query()
	page, _ := strconv.Atoi(q.Get("page"))
	per, _ := strconv.Atoi(q.Get("per_page"))
	if page < 1 {
		page = 1
	}
	if per < 1 {
		per = 20
	}
	per = min(per, 200)
	last := max(1, (len(items)+per-1)/per)
	lo := min((page-1)*per, len(items))
	hi := min(lo+per, len(items))
	pageURL := func(p int) string {
		u := url.URL{Scheme: "http", Host: r.Host, Path: r.URL.Path}
		qq := url.Values{}
		for k, v := range q {
			qq[k] = v
		}
		qq.Set("page", strconv.Itoa(p))
		qq.Set("per_page", strconv.Itoa(per))
		u.RawQuery = qq.Encode()
		return u.String()
	}
	var l links
	if page > 1 || page < last {
		l.Pages = &pages{}
		if page > 1 {
			l.Pages.First = pageURL(1)
			l.Pages.Prev = pageURL(page - 1)
		}
		if page < last {
			l.Pages.Next = pageURL(page + 1)
			l.Pages.Last = pageURL(last)
		}
	}
	return items[lo:hi], l, meta{Total: len(items)}
}

// sortedDroplets returns copies of the droplets keep accepts, oldest first. Callers hold s.mu.
func (s *Server) sortedDroplets(keep func(*droplet) bool) []Droplet {
	out := make([]Droplet, 0, len(s.droplets))
	for _, d := range s.droplets {
		if keep(d) {
			out = append(out, cloneDroplet(d.Droplet))
		}
	}
	slices.SortFunc(out, func(a, b Droplet) int { return a.ID - b.ID })
	return out
}

func cloneDroplet(d Droplet) Droplet {
	d.Tags = slices.Clone(d.Tags)
	d.Networks.V4 = slices.Clone(d.Networks.V4)
	d.Networks.V6 = slices.Clone(d.Networks.V6)
	return d
}

func (s *Server) listDroplets(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	tag, name, typ := q.Get("tag_name"), q.Get("name"), q.Get("type")
	switch {
	case tag != "" && name != "":
		unprocessable(w, "Only one of tag_name or name may be given.")
		return
	case tag != "" && typ != "":
		unprocessable(w, "type can not be combined with tag_name.")
		return
	case typ != "" && typ != "droplets" && typ != "gpus":
		unprocessable(w, "type must be droplets or gpus.")
		return
	}
	now := time.Now()
	s.mu.Lock()
	s.settleLocked(now)
	all := s.sortedDroplets(func(d *droplet) bool {
		if now.Before(d.listAt) {
			return false // not listed yet: the listing is eventually consistent
		}
		// GPU droplets are listed only with type=gpus, the others only without it.
		if d.gpu != (typ == "gpus") {
			return false
		}
		// Tags are matched in their canonical capitalisation.
		if tag != "" && !slices.Contains(d.Tags, tag) {
			return false
		}
		// The name filter is an exact, case-insensitive match.
		return name == "" || strings.EqualFold(d.Name, name)
	})
	s.mu.Unlock()
	page, l, m := paginate(r, all)
	writeJSON(w, http.StatusOK, struct {
		Droplets []Droplet `json:"droplets"`
		Links    links     `json:"links"`
		Meta     meta      `json:"meta"`
	}{page, l, m})
}

func (s *Server) dropletByPath(w http.ResponseWriter, r *http.Request) (*droplet, bool) {
	id, err := strconv.Atoi(r.PathValue("id"))
	if err != nil {
		notFound(w)
		return nil, false
	}
	d, ok := s.droplets[id]
	if !ok {
		notFound(w)
	}
	return d, ok
}

func (s *Server) getDroplet(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.settleLocked(time.Now())
	d, ok := s.dropletByPath(w, r)
	var out Droplet
	if ok {
		out = cloneDroplet(d.Droplet)
	}
	s.mu.Unlock()
	if ok {
		writeJSON(w, http.StatusOK, map[string]any{"droplet": out})
	}
}

// createRequest accepts both shapes: "name" for one droplet, "names" for up to ten.
type createRequest struct {
	Name              string            `json:"name"`
	Names             []string          `json:"names"`
	Region            string            `json:"region"`
	Size              string            `json:"size"`
	Image             json.RawMessage   `json:"image"`
	SSHKeys           []json.RawMessage `json:"ssh_keys"`
	Backups           bool              `json:"backups"`
	IPv6              bool              `json:"ipv6"`
	PrivateNetworking bool              `json:"private_networking"`
	Monitoring        bool              `json:"monitoring"`
	UserData          string            `json:"user_data"`
	Tags              []string          `json:"tags"`
	VPCUUID           string            `json:"vpc_uuid"`
}

var (
	hostnameRE = lazyre.New(`^[a-zA-Z0-9]([a-zA-Z0-9.-]{0,253}[a-zA-Z0-9])?$`)
	tagRE      = lazyre.New(`^[a-zA-Z0-9_:\-]{1,255}$`)
)

func (s *Server) createDroplets(w http.ResponseWriter, r *http.Request) {
	var req createRequest
	if !decodeBody(w, r, &req) {
		return
	}
	multi := req.Names != nil
	names := req.Names
	if !multi {
		names = []string{req.Name}
	}
	switch {
	case multi && req.Name != "":
		unprocessable(w, "Only one of name or names may be given.")
		return
	case len(names) == 0:
		unprocessable(w, "You must specify at least one name.")
		return
	case len(names) > 10:
		unprocessable(w, "You may only create up to 10 Droplets at a time.")
		return
	}
	for _, n := range names {
		if n == "" {
			unprocessable(w, "Name is required.")
			return
		}
		if !hostnameRE.MatchString(n) {
			unprocessable(w, fmt.Sprintf("Name (%s) is invalid. Only valid hostname characters are allowed. (a-z, A-Z, 0-9, . and -)", n))
			return
		}
	}
	for _, t := range req.Tags {
		if !tagRE.MatchString(t) {
			unprocessable(w, fmt.Sprintf("Tag %q is invalid: tags may contain letters, numbers, colons, dashes and underscores.", t))
			return
		}
	}
	if len(req.UserData) > 64<<10 {
		unprocessable(w, "User data is limited to 64 KiB.")
		return
	}
	size, ok := findSize(req.Size)
	if !ok {
		unprocessable(w, "You specified an invalid size for Droplet creation.")
		return
	}
	region, ok := pickRegion(req.Region, size)
	if !ok {
		if _, known := regionNames[req.Region]; known || req.Region == "" || regionPrefixKnown(req.Region) {
			unprocessable(w, "Size is not available in this region.")
		} else {
			unprocessable(w, "You specified an invalid region for Droplet creation.")
		}
		return
	}
	img, ok := findImageRaw(req.Image)
	if !ok || !slices.Contains(img.Regions, region.Slug) {
		unprocessable(w, "You specified an invalid image for Droplet creation.")
		return
	}
	if len(req.Tags) > 0 && !s.hasScope("tag:create") {
		forbidden(w)
		return
	}

	s.mu.Lock()
	for _, raw := range req.SSHKeys {
		if !s.keyExistsRaw(raw) {
			s.mu.Unlock()
			unprocessable(w, fmt.Sprintf("ssh_keys: %s is not a valid key id or fingerprint.", string(raw)))
			return
		}
	}
	if len(s.droplets)+len(names) > s.limit {
		s.mu.Unlock()
		unprocessable(w, fmt.Sprintf("creating this/these droplet(s) will exceed your droplet limit (%d).", s.limit))
		return
	}
	now := time.Now()
	tags := s.canonicalTagsLocked(req.Tags)
	made := make([]Droplet, 0, len(names))
	var acts []linkAction
	for _, n := range names {
		s.nextID++
		id := s.nextID
		s.nextID++
		aid := s.nextID
		d := &droplet{
			Droplet: Droplet{
				ID: id, Name: n, Memory: size.Memory, Vcpus: size.Vcpus, Disk: size.Disk,
				Status: "new", CreatedAt: nowString(now), Features: []string{},
				BackupIDs: []int{}, SnapshotIDs: []int{}, Image: img, VolumeIDs: []string{},
				Size: size, SizeSlug: size.Slug, Networks: Networks{V4: []NetworkV4{}, V6: []NetworkV6{}},
				Region: region, Tags: slices.Clone(tags), VPCUUID: req.VPCUUID,
			},
			userData: req.UserData,
			actionID: aid,
			gpu:      isGPU(size),
			listAt:   now.Add(s.opts.ListDelay),
		}
		if s.opts.TagDelay > 0 && len(tags) > 0 {
			d.lateTags, d.tagsAt, d.Tags = d.Tags, now.Add(s.opts.TagDelay), []string{}
		}
		if s.opts.Locked != nil && s.opts.Locked(n) {
			d.Locked = true
		}
		if req.IPv6 {
			d.Features = append(d.Features, "ipv6")
		}
		if req.Monitoring {
			d.Features = append(d.Features, "monitoring")
		}
		if d.VPCUUID == "" {
			d.VPCUUID = "5a4981aa-9653-4bd1-bef5-d6bff52042e4"
		}
		s.droplets[id] = d
		s.actions[aid] = &Action{ID: aid, Status: "in-progress", Type: "create", StartedAt: nowString(now),
			ResourceID: id, ResourceType: "droplet", Region: &region, RegionSlug: region.Slug}
		acts = append(acts, linkAction{ID: aid, Rel: "create", Href: fmt.Sprintf("http://%s/v2/actions/%d", r.Host, aid)})
		made = append(made, cloneDroplet(d.Droplet))
		s.wg.Add(1)
		go s.boot(id, req.IPv6)
	}
	s.mu.Unlock()

	if multi {
		writeJSON(w, http.StatusAccepted, map[string]any{"droplets": made, "links": links{Actions: acts}})
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"droplet": made[0], "links": links{Actions: acts}})
}

// boot takes droplet id from "new" to "active": wait the boot delay, run the Booter, assign
// addresses, complete the create action.
func (s *Server) boot(id int, ipv6 bool) {
	defer s.wg.Done()
	s.mu.Lock()
	d, ok := s.droplets[id]
	if !ok {
		s.mu.Unlock()
		return
	}
	snap, userData, name := cloneDroplet(d.Droplet), d.userData, d.Name
	s.mu.Unlock()

	if s.opts.BootDelay > 0 {
		t := time.NewTimer(s.opts.BootDelay)
		select {
		case <-s.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
	if s.opts.Stuck != nil && s.opts.Stuck(name) {
		return
	}
	if s.opts.CreateErrors != nil && s.opts.CreateErrors(name) {
		// Accepted, then failed: the create action errors and the droplet is gone.
		s.mu.Lock()
		if d, ok := s.droplets[id]; ok {
			s.finishAction(d.actionID, "errored")
			delete(s.droplets, id)
		}
		s.mu.Unlock()
		return
	}
	ip := fmt.Sprintf("198.18.%d.%d", (id>>8)&0xff, id&0xff)
	if s.opts.Booter != nil {
		got, err := s.opts.Booter.Boot(s.ctx, snap, userData)
		if err != nil {
			s.opts.Logger.Warn("dosim: boot failed", "droplet", name, "err", err)
			s.mu.Lock()
			s.finishAction(d.actionID, "errored")
			s.mu.Unlock()
			return
		}
		ip = got
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok = s.droplets[id]
	if !ok {
		// Deleted while booting: release what the booter made.
		if s.opts.Booter != nil {
			s.wg.Add(1)
			go func() { defer s.wg.Done(); s.opts.Booter.Destroy(name) }()
		}
		return
	}
	d.booted = s.opts.Booter != nil
	d.Status = "active"
	d.Networks.V4 = []NetworkV4{
		{IPAddress: fmt.Sprintf("10.110.%d.%d", (id>>8)&0xff, id&0xff), Netmask: "255.255.240.0", Gateway: "10.110.0.1", Type: "private"},
		{IPAddress: ip, Netmask: "255.255.255.0", Gateway: "198.18.0.1", Type: "public"},
	}
	if ipv6 {
		d.Networks.V6 = []NetworkV6{{IPAddress: fmt.Sprintf("2001:db8::%x", id), Netmask: 64, Gateway: "2001:db8::1", Type: "public"}}
	}
	s.finishAction(d.actionID, "completed")
}

// finishAction ends an action as completed or errored; callers hold s.mu.
func (s *Server) finishAction(id int, status string) {
	if a, ok := s.actions[id]; ok {
		a.Status = status
		done := nowString(time.Now())
		a.CompletedAt = &done
	}
}

// removeLocked deletes a droplet; callers hold s.mu.
func (s *Server) removeLocked(d *droplet) {
	delete(s.droplets, d.ID)
	if d.booted {
		name := d.Name
		s.wg.Add(1)
		go func() { defer s.wg.Done(); s.opts.Booter.Destroy(name) }()
	}
}

func (s *Server) deleteDroplet(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.dropletByPath(w, r)
	if !ok {
		return
	}
	if d.Locked {
		unprocessable(w, "Droplet already has a pending event.")
		return
	}
	s.startDeleteLocked(d)
	w.WriteHeader(http.StatusNoContent)
}

// startDeleteLocked begins deleting a droplet as DigitalOcean does: a droplet still "new"
// ignores it; otherwise a "destroy" action starts and the droplet lingers, unchanged and still
// listed, for DeleteDelay before it 404s (or, for NeverDeleted, stays and the action errors).
// Callers hold s.mu.
func (s *Server) startDeleteLocked(d *droplet) {
	if d.Status == "new" || d.deleting {
		return
	}
	if s.opts.DeleteDelay < 0 {
		s.removeLocked(d)
		return
	}
	d.deleting = true
	s.nextID++
	aid := s.nextID
	s.actions[aid] = &Action{ID: aid, Status: "in-progress", Type: "destroy", StartedAt: nowString(time.Now()),
		ResourceID: d.ID, ResourceType: "droplet", Region: &d.Region, RegionSlug: d.Region.Slug}
	never := s.opts.NeverDeleted != nil && s.opts.NeverDeleted(d.Name)
	id := d.ID
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTimer(s.opts.DeleteDelay)
		select {
		case <-s.ctx.Done():
			// Closing: a delete that would have gone through does so now, so that a Booter
			// releases what it made.
			t.Stop()
		case <-t.C:
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		d, ok := s.droplets[id]
		if !ok {
			return
		}
		if never {
			d.deleting = false
			s.finishAction(aid, "errored")
			return
		}
		s.finishAction(aid, "completed")
		s.removeLocked(d)
	}()
}

func (s *Server) deleteDropletsByTag(w http.ResponseWriter, r *http.Request) {
	tag := r.URL.Query().Get("tag_name")
	if tag == "" {
		// DigitalOcean refuses an unfiltered delete rather than deleting everything.
		unprocessable(w, "tag_name is required.")
		return
	}
	s.mu.Lock()
	s.settleLocked(time.Now())
	for _, d := range s.droplets {
		if slices.Contains(d.Tags, tag) && !d.Locked {
			s.startDeleteLocked(d)
		}
	}
	s.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

var dropletActionTypes = map[string]string{ // action type -> status after it completes
	"reboot": "active", "power_cycle": "active", "shutdown": "off", "power_off": "off", "power_on": "active",
	"enable_ipv6": "", "enable_private_networking": "", "enable_backups": "", "disable_backups": "",
}

func (s *Server) postDropletAction(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Type string `json:"type"`
	}
	if !decodeBody(w, r, &req) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.dropletByPath(w, r)
	if !ok {
		return
	}
	after, known := dropletActionTypes[req.Type]
	if !known {
		unprocessable(w, fmt.Sprintf("%q is not a valid action type.", req.Type))
		return
	}
	if d.Status == "new" {
		unprocessable(w, "Droplet is currently being created; please try again later.")
		return
	}
	// Actions on the simulator complete at once; the response still says in-progress, as the
	// API does, and a later GET of the action reports completed.
	s.nextID++
	now := nowString(time.Now())
	a := &Action{ID: s.nextID, Status: "completed", Type: req.Type, StartedAt: now, CompletedAt: &now,
		ResourceID: d.ID, ResourceType: "droplet", Region: &d.Region, RegionSlug: d.Region.Slug}
	s.actions[a.ID] = a
	if after != "" {
		d.Status = after
	}
	if req.Type == "enable_ipv6" && !slices.Contains(d.Features, "ipv6") {
		d.Features = append(d.Features, "ipv6")
	}
	resp := *a
	resp.Status, resp.CompletedAt = "in-progress", nil
	writeJSON(w, http.StatusCreated, map[string]any{"action": resp})
}

func (s *Server) actionsFor(resourceID int) []Action {
	var out []Action
	for _, a := range s.actions {
		if resourceID == 0 || a.ResourceID == resourceID {
			out = append(out, *a)
		}
	}
	slices.SortFunc(out, func(a, b Action) int { return b.ID - a.ID }) // newest first
	return out
}

func (s *Server) listDropletActions(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	d, ok := s.dropletByPath(w, r)
	var all []Action
	if ok {
		all = s.actionsFor(d.ID)
	}
	s.mu.Unlock()
	if !ok {
		return
	}
	page, l, m := paginate(r, all)
	writeJSON(w, http.StatusOK, map[string]any{"actions": nonNil(page), "links": l, "meta": m})
}

func (s *Server) getDropletAction(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.dropletByPath(w, r)
	if !ok {
		return
	}
	aid, _ := strconv.Atoi(r.PathValue("aid"))
	a, ok := s.actions[aid]
	if !ok || a.ResourceID != d.ID {
		notFound(w)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"action": *a})
}

func (s *Server) listActions(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	all := s.actionsFor(0)
	s.mu.Unlock()
	page, l, m := paginate(r, all)
	writeJSON(w, http.StatusOK, map[string]any{"actions": nonNil(page), "links": l, "meta": m})
}

func (s *Server) getAction(w http.ResponseWriter, r *http.Request) {
	aid, _ := strconv.Atoi(r.PathValue("id"))
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.actions[aid]
	if !ok {
		notFound(w)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"action": *a})
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
