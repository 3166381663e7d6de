package dosim

import (
	"net/http"
	"slices"
	"strings"
	"time"
)

// Where dosim follows the real API rather than the kindest reading of it. Each point names the
// file of DigitalOcean's OpenAPI description (github.com/digitalocean/openapi, specification/) or
// the terraform-provider-digitalocean issue it follows.
//
//   - Scopes: every endpoint needs the scope its spec file lists under security.bearer_auth
//     (resources/droplets/droplets_list.yml: droplet:read, droplets_create.yml: droplet:create,
//     and tag:create when tags are given, models/droplet_create.yml); a token without it gets a
//     403 whose message does not name the scope.
//   - Deletes are asynchronous (droplets_destroy.yml answers 204 before anything happened): the
//     droplet is still listed, unchanged, with a "destroy" action in progress, for DeleteDelay
//     (terraform-provider-digitalocean #1586: deletes that take over a minute), and sometimes
//     never goes (#283: a droplet not destroyed although the delete succeeded). A droplet still
//     "new" ignores a delete (test-kitchen/kitchen-digitalocean #40 asks again until it is
//     gone); a locked one refuses it with 422 "Droplet already has a pending event."
//     (hashicorp/packer #1814; hashicorp/terraform #1057 waits for the unlock before deleting).
//   - Creates are accepted, not done (droplets_create.yml: "202 Accepted does not indicate the
//     success or failure of the operation"): the create action can end "errored" and the droplet
//     404 (terraform-provider-digitalocean #1493).
//   - Regions: a slug prefix ("nyc") picks one of that region's datacenters, an omitted region
//     any (models/droplet_create.yml, region); sizes are offered per region (resources/sizes,
//     "regions" of each size; resources/regions, "sizes" of each region).
//   - Images are slugs or integer ids; a custom image has only an id (models/droplet_create.yml,
//     image: oneOf string, integer).
//   - Tags are case stable: the capitalisation a tag was first made with is canonical, and the
//     API answers with it (resources/tags/models/tags.yml, name).
//   - Droplet names must start and end with a letter or digit
//     (models/droplet_single_create.yml, name pattern).
//   - GPU droplets are listed only with type=gpus, other droplets only without it; type cannot
//     be combined with tag_name (resources/droplets/parameters.yml, droplet_type).
//   - Records whose data is a host name (CNAME, MX, NS, SRV) must be sent with a trailing dot
//     and are returned without it (terraform-provider-digitalocean, domain/resource_record.go,
//     appends the dot on read); records of one name and type share one TTL (RFC 2181 5.2: the
//     last TTL set applies to the whole set).

// routeScopes maps a route pattern to the scopes its endpoint needs.
var routeScopes = map[string][]string{
	"GET /v2/droplets":                       {"droplet:read"},
	"POST /v2/droplets":                      {"droplet:create"},
	"DELETE /v2/droplets":                    {"droplet:delete", "tag:read"},
	"GET /v2/droplets/{id}":                  {"droplet:read"},
	"DELETE /v2/droplets/{id}":               {"droplet:delete"},
	"POST /v2/droplets/{id}/actions":         {"droplet:update"},
	"GET /v2/droplets/{id}/actions":          {"droplet:read"},
	"GET /v2/droplets/{id}/actions/{aid}":    {"droplet:read"},
	"GET /v2/actions":                        {"actions:read"},
	"GET /v2/actions/{id}":                   {"actions:read"},
	"GET /v2/account":                        {"account:read"},
	"GET /v2/account/keys":                   {"ssh_key:read"},
	"POST /v2/account/keys":                  {"ssh_key:create"},
	"GET /v2/account/keys/{key}":             {"ssh_key:read"},
	"DELETE /v2/account/keys/{key}":          {"ssh_key:delete"},
	"GET /v2/regions":                        {"regions:read"},
	"GET /v2/sizes":                          {"sizes:read"},
	"GET /v2/images":                         {"image:read"},
	"GET /v2/images/{image}":                 {"image:read"},
	"GET /v2/domains":                        {"domain:read"},
	"POST /v2/domains":                       {"domain:create"},
	"GET /v2/domains/{name}":                 {"domain:read"},
	"DELETE /v2/domains/{name}":              {"domain:delete"},
	"GET /v2/domains/{name}/records":         {"domain:read"},
	"POST /v2/domains/{name}/records":        {"domain:create"},
	"GET /v2/domains/{name}/records/{id}":    {"domain:read"},
	"PUT /v2/domains/{name}/records/{id}":    {"domain:update"},
	"PATCH /v2/domains/{name}/records/{id}":  {"domain:update"},
	"DELETE /v2/domains/{name}/records/{id}": {"domain:delete"},
}

// RouteScopes returns the scopes the API needs for method and path, as the simulator enforces
// them (nil for an unknown route).
func RouteScopes(method, path string) []string {
	r, _ := http.NewRequest(method, "http://dosim"+path, nil)
	if r == nil {
		return nil
	}
	_, pattern := New(Options{}).mux.Handler(r)
	return slices.Clone(routeScopes[pattern])
}

func scopesFor(pattern string, _ *http.Request) []string { return routeScopes[pattern] }

// hasScope reports whether the token has scope need ("droplet:read"), or all of its resource
// ("droplet:*").
func (s *Server) hasScope(need string) bool {
	if s.opts.Scopes == nil {
		return true
	}
	res, _, _ := strings.Cut(need, ":")
	return slices.Contains(s.opts.Scopes, need) || slices.Contains(s.opts.Scopes, res+":*")
}

func forbidden(w http.ResponseWriter) {
	writeError(w, http.StatusForbidden, "forbidden", "You are not authorized to perform this operation")
}

// canonicalTagsLocked returns tags in their canonical capitalisation, making the new ones;
// callers hold s.mu.
func (s *Server) canonicalTagsLocked(tags []string) []string {
	out := []string{}
	for _, t := range tags {
		k := strings.ToLower(t)
		c, ok := s.tags[k]
		if !ok {
			s.tags[k], c = t, t
		}
		if !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out
}

// MakeTag creates a tag as the console would, fixing its capitalisation for the account: a
// droplet created later with "brine" is tagged with the name given here, e.g. "Brine".
func (s *Server) MakeTag(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.canonicalTagsLocked([]string{name})
}

// settleLocked applies what has become due: late tags. Callers hold s.mu.
func (s *Server) settleLocked(now time.Time) {
	for _, d := range s.droplets {
		if d.lateTags != nil && !now.Before(d.tagsAt) {
			d.Tags, d.lateTags = d.lateTags, nil
		}
	}
}

// fqdnData reports whether a record type's data is a host name.
func fqdnData(typ string) bool {
	switch typ {
	case "CNAME", "MX", "NS", "SRV":
		return true
	}
	return false
}
