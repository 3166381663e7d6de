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

var allRegions = []string{"ams3", "blr1", "fra1", "lon1", "nyc1", "nyc2", "nyc3", "sfo3", "sgp1", "syd1", "tor1"}

// unavailable regions are listed but take no new droplets (DigitalOcean's nyc2).
var unavailable = map[string]bool{"nyc2": true}

// sizes, each with the regions that offer it: as on DigitalOcean, not every size is offered
// everywhere (resources/sizes/models/size.yml, regions).
var sizes = []Size{
	{Slug: "s-1vcpu-512mb-10gb", Memory: 512, Vcpus: 1, Disk: 10, Transfer: 0.5, PriceMonthly: 4, PriceHourly: 0.00595, Description: "Basic",
		Regions: []string{"fra1", "nyc1", "sfo3", "sgp1"}},
	{Slug: "s-1vcpu-1gb", Memory: 1024, Vcpus: 1, Disk: 25, Transfer: 1, PriceMonthly: 6, PriceHourly: 0.00893, Description: "Basic"},
	{Slug: "s-1vcpu-2gb", Memory: 2048, Vcpus: 1, Disk: 50, Transfer: 2, PriceMonthly: 12, PriceHourly: 0.01786, Description: "Basic"},
	{Slug: "s-2vcpu-2gb", Memory: 2048, Vcpus: 2, Disk: 60, Transfer: 3, PriceMonthly: 18, PriceHourly: 0.02679, Description: "Basic"},
	{Slug: "s-2vcpu-4gb", Memory: 4096, Vcpus: 2, Disk: 80, Transfer: 4, PriceMonthly: 24, PriceHourly: 0.03571, Description: "Basic"},
	{Slug: "s-4vcpu-8gb", Memory: 8192, Vcpus: 4, Disk: 160, Transfer: 5, PriceMonthly: 48, PriceHourly: 0.07143, Description: "Basic",
		Regions: []string{"ams3", "fra1", "lon1", "nyc1", "nyc3", "sfo3", "sgp1", "tor1"}},
	{Slug: "c-2", Memory: 4096, Vcpus: 2, Disk: 25, Transfer: 4, PriceMonthly: 42, PriceHourly: 0.0625, Description: "CPU-Optimized",
		Regions: []string{"ams3", "fra1", "nyc1", "nyc3", "sfo3", "tor1"}},
	{Slug: "gpu-h100x1-80gb", Memory: 245760, Vcpus: 20, Disk: 720, Transfer: 15, PriceMonthly: 2522.88, PriceHourly: 3.39, Description: "H100 GPU - 1X",
		Regions: []string{"nyc3", "tor1"}},
}

var images = []Image{
	{ID: 165064169, Name: "24.04 (LTS) x64", Distribution: "Ubuntu", Slug: ptr("ubuntu-24-04-x64"), MinDiskSize: 7, SizeGigabytes: 2.34},
	{ID: 129211873, Name: "22.04 (LTS) x64", Distribution: "Ubuntu", Slug: ptr("ubuntu-22-04-x64"), MinDiskSize: 7, SizeGigabytes: 2.2},
	{ID: 155133635, Name: "12 x64", Distribution: "Debian", Slug: ptr("debian-12-x64"), MinDiskSize: 7, SizeGigabytes: 1.1},
	// A custom image: an integer id and no slug, in the regions it was uploaded to.
	{ID: 170000001, Name: "brine-golden", Distribution: "Debian", MinDiskSize: 10, SizeGigabytes: 1.6, Type: "custom",
		Regions: []string{"ams3", "nyc3"}},
}

// CustomImageID is the id of the simulator's one custom image (no slug; in ams3 and nyc3 only).
const CustomImageID = 170000001

func ptr[T any](v T) *T { return &v }

func init() {
	var usable []string
	for _, r := range allRegions {
		if !unavailable[r] {
			usable = append(usable, r)
		}
	}
	for i := range sizes {
		if sizes[i].Regions == nil {
			sizes[i].Regions = usable
		}
		sizes[i].Available = true
	}
	for i := range images {
		images[i].Public = images[i].Type == ""
		if images[i].Regions == nil {
			images[i].Regions = usable
		}
		if images[i].Type == "" {
			images[i].Type = "base"
		}
		images[i].Status = "available"
		images[i].CreatedAt = "2024-04-25T00:00:00Z"
	}
}

var regionNames = map[string]string{
	"ams3": "Amsterdam 3", "blr1": "Bangalore 1", "fra1": "Frankfurt 1", "lon1": "London 1", "nyc1": "New York 1",
	"nyc2": "New York 2", "nyc3": "New York 3", "sfo3": "San Francisco 3", "sgp1": "Singapore 1", "syd1": "Sydney 1",
	"tor1": "Toronto 1",
}

func isGPU(s Size) bool { return strings.HasPrefix(s.Slug, "gpu-") }

func findRegion(slug string) (Region, bool) {
	name, ok := regionNames[slug]
	if !ok {
		return Region{}, false
	}
	r := Region{Slug: slug, Name: name, Available: !unavailable[slug], Sizes: []string{},
		Features: []string{"backups", "ipv6", "metadata", "install_agent", "storage", "image_transfer"}}
	for _, s := range sizes {
		if slices.Contains(s.Regions, slug) {
			r.Sizes = append(r.Sizes, s.Slug)
		}
	}
	return r, true
}

// pickRegion resolves a create request's region for a size: an exact slug, a prefix such as
// "nyc" (any of its datacenters that offers the size), or "" (any region that does).
func pickRegion(want string, size Size) (Region, bool) {
	for _, slug := range allRegions {
		if unavailable[slug] || !slices.Contains(size.Regions, slug) {
			continue
		}
		if want == "" || want == slug || (regionPrefix(want) && strings.HasPrefix(slug, want)) {
			return findRegion(slug)
		}
	}
	return Region{}, false
}

// regionPrefix reports whether want is a region prefix: letters only, as "nyc".
func regionPrefix(want string) bool {
	if want == "" {
		return false
	}
	for _, c := range want {
		if c < 'a' || c > 'z' {
			return false
		}
	}
	return true
}

func regionPrefixKnown(want string) bool {
	if !regionPrefix(want) {
		return false
	}
	for _, slug := range allRegions {
		if strings.HasPrefix(slug, want) {
			return true
		}
	}
	return false
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
		if (im.Slug != nil && *im.Slug == idOrSlug) || strconv.Itoa(im.ID) == idOrSlug {
			return im, true
		}
	}
	return Image{}, false
}

// findImageRaw accepts the create request's image: a slug string or an integer id.
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
	q := r.URL.Query()
	var all []Image
	for _, im := range images {
		// private=true lists the account's own images, type=distribution the public ones.
		if (q.Get("private") == "true" && im.Public) || (q.Get("type") == "distribution" && im.Type != "base") {
			continue
		}
		all = append(all, im)
	}
	page, l, m := paginate(r, nonNil(all))
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
