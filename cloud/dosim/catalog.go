package dosim

import (
	"crypto/md5"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

var allRegions = []string{"ams3", "blr1", "fra1", "lon1", "nyc1", "nyc3", "sfo3", "sgp1", "syd1", "tor1"}

var sizes = []Size{
	{Slug: "s-1vcpu-512mb-10gb", Memory: 512, Vcpus: 1, Disk: 10, Transfer: 0.5, PriceMonthly: 4, PriceHourly: 0.00595, Description: "Basic"},
	{Slug: "s-1vcpu-1gb", Memory: 1024, Vcpus: 1, Disk: 25, Transfer: 1, PriceMonthly: 6, PriceHourly: 0.00893, Description: "Basic"},
	{Slug: "s-1vcpu-2gb", Memory: 2048, Vcpus: 1, Disk: 50, Transfer: 2, PriceMonthly: 12, PriceHourly: 0.01786, Description: "Basic"},
	{Slug: "s-2vcpu-2gb", Memory: 2048, Vcpus: 2, Disk: 60, Transfer: 3, PriceMonthly: 18, PriceHourly: 0.02679, Description: "Basic"},
	{Slug: "s-2vcpu-4gb", Memory: 4096, Vcpus: 2, Disk: 80, Transfer: 4, PriceMonthly: 24, PriceHourly: 0.03571, Description: "Basic"},
	{Slug: "s-4vcpu-8gb", Memory: 8192, Vcpus: 4, Disk: 160, Transfer: 5, PriceMonthly: 48, PriceHourly: 0.07143, Description: "Basic"},
}

var images = []Image{
	{ID: 165064169, Name: "24.04 (LTS) x64", Distribution: "Ubuntu", Slug: "ubuntu-24-04-x64", MinDiskSize: 7, SizeGigabytes: 2.34},
	{ID: 129211873, Name: "22.04 (LTS) x64", Distribution: "Ubuntu", Slug: "ubuntu-22-04-x64", MinDiskSize: 7, SizeGigabytes: 2.2},
	{ID: 155133635, Name: "12 x64", Distribution: "Debian", Slug: "debian-12-x64", MinDiskSize: 7, SizeGigabytes: 1.1},
}

func init() {
	for i := range sizes {
		sizes[i].Regions = allRegions
		sizes[i].Available = true
	}
	for i := range images {
		images[i].Public, images[i].Regions, images[i].Type, images[i].Status = true, allRegions, "base", "available"
		images[i].CreatedAt = "2024-04-25T00:00:00Z"
	}
}

var regionNames = map[string]string{
	"ams3": "Amsterdam 3", "blr1": "Bangalore 1", "fra1": "Frankfurt 1", "lon1": "London 1", "nyc1": "New York 1",
	"nyc3": "New York 3", "sfo3": "San Francisco 3", "sgp1": "Singapore 1", "syd1": "Sydney 1", "tor1": "Toronto 1",
}

func findRegion(slug string) (Region, bool) {
	name, ok := regionNames[slug]
	if !ok {
		return Region{}, false
	}
	r := Region{Slug: slug, Name: name, Available: true,
		Features: []string{"backups", "ipv6", "metadata", "install_agent", "storage", "image_transfer"}}
	for _, s := range sizes {
		r.Sizes = append(r.Sizes, s.Slug)
	}
	return r, true
}

func findSize(slug string) (Size, bool) {
	for _, s := range sizes {
		if s.Slug == slug {
			return s, true
		}
	}
	return Size{}, false
}

func findImage(idOrSlug string) (Image, bool) {
	for _, im := range images {
		if im.Slug == idOrSlug || strconv.Itoa(im.ID) == idOrSlug {
			return im, true
		}
	}
	return Image{}, false
}

// findImageRaw accepts the create request's image: a slug string or a numeric id.
func findImageRaw(raw json.RawMessage) (Image, bool) {
	var slug string
	if json.Unmarshal(raw, &slug) == nil {
		return findImage(slug)
	}
	var id int
	if json.Unmarshal(raw, &id) == nil {
		return findImage(strconv.Itoa(id))
	}
	return Image{}, false
}

func (s *Server) listRegions(w http.ResponseWriter, r *http.Request) {
	all := make([]Region, 0, len(allRegions))
	for _, slug := range allRegions {
		reg, _ := findRegion(slug)
		all = append(all, reg)
	}
	page, l, m := paginate(r, all)
	writeJSON(w, http.StatusOK, map[string]any{"regions": page, "links": l, "meta": m})
}

func (s *Server) listSizes(w http.ResponseWriter, r *http.Request) {
	page, l, m := paginate(r, sizes)
	writeJSON(w, http.StatusOK, map[string]any{"sizes": page, "links": l, "meta": m})
}

func (s *Server) listImages(w http.ResponseWriter, r *http.Request) {
	page, l, m := paginate(r, images)
	writeJSON(w, http.StatusOK, map[string]any{"images": page, "links": l, "meta": m})
}

func (s *Server) getImage(w http.ResponseWriter, r *http.Request) {
	im, ok := findImage(r.PathValue("image"))
	if !ok {
		notFound(w)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"image": im})
}

func (s *Server) getAccount(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	limit := s.limit
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"account": map[string]any{
		"droplet_limit": limit, "floating_ip_limit": 3, "reserved_ip_limit": 3, "volume_limit": 100,
		"email": "sim@example.com", "uuid": "b6fr89dbf6d9156cace5f3c78dc9851d957381ef", "email_verified": true,
		"status": "active", "status_message": "",
	}})
}

// keyExistsRaw reports whether raw (a key id number or a fingerprint string) names a key.
// Callers hold s.mu.
func (s *Server) keyExistsRaw(raw json.RawMessage) bool {
	var fp string
	if json.Unmarshal(raw, &fp) == nil {
		_, ok := s.keyIndex(fp)
		return ok
	}
	var id int
	if json.Unmarshal(raw, &id) == nil {
		_, ok := s.keyIndex(strconv.Itoa(id))
		return ok
	}
	return false
}

// keyIndex finds a key by id or fingerprint; callers hold s.mu.
func (s *Server) keyIndex(idOrFP string) (int, bool) {
	for i, k := range s.keys {
		if strconv.Itoa(k.ID) == idOrFP || k.Fingerprint == idOrFP {
			return i, true
		}
	}
	return 0, false
}

func (s *Server) listKeys(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	all := slices.Clone(s.keys)
	s.mu.Unlock()
	page, l, m := paginate(r, all)
	writeJSON(w, http.StatusOK, map[string]any{"ssh_keys": nonNil(page), "links": l, "meta": m})
}

func (s *Server) createKey(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name      string `json:"name"`
		PublicKey string `json:"public_key"`
	}
	if !decodeBody(w, r, &req) {
		return
	}
	f := strings.Fields(req.PublicKey)
	if req.Name == "" || len(f) < 2 {
		unprocessable(w, "Key invalid, key should be of the format `type key [comment]`")
		return
	}
	blob, err := base64.StdEncoding.DecodeString(f[1])
	if err != nil {
		unprocessable(w, "Key invalid, key should be of the format `type key [comment]`")
		return
	}
	sum := md5.Sum(blob) // DigitalOcean fingerprints are the legacy MD5 form
	var fp []string
	for _, b := range sum {
		fp = append(fp, fmt.Sprintf("%02x", b))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k := Key{Name: req.Name, PublicKey: req.PublicKey, Fingerprint: strings.Join(fp, ":")}
	if _, dup := s.keyIndex(k.Fingerprint); dup {
		unprocessable(w, "SSH Key is already in use on your account")
		return
	}
	s.nextID++
	k.ID = s.nextID
	s.keys = append(s.keys, k)
	writeJSON(w, http.StatusCreated, map[string]any{"ssh_key": k})
}

func (s *Server) getKey(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.keyIndex(r.PathValue("key"))
	if !ok {
		notFound(w)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ssh_key": s.keys[i]})
}

func (s *Server) deleteKey(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.keyIndex(r.PathValue("key"))
	if !ok {
		notFound(w)
		return
	}
	s.keys = slices.Delete(s.keys, i, i+1)
	w.WriteHeader(http.StatusNoContent)
}
