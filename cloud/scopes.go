package cloud

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/brinecm/brine/internal/lazyre"
)

// DigitalOcean's custom-scoped tokens answer 403 "You are not authorized to perform this
// operation" without saying which scope was missing. brine knows which endpoint it called, and
// the OpenAPI description lists the scope each endpoint needs (security.bearer_auth of each
// operation in github.com/digitalocean/openapi, specification/resources/*), so it says.

type scopeRoute struct {
	method string
	path   *lazyre.Regexp
	scopes []string
}

var scopeRoutes = []scopeRoute{
	{"GET", lazyre.New(`^/v2/droplets$`), []string{"droplet:read"}},
	// Tags and the image are part of a create: tag:create for its tags, image:read for its
	// image (models/droplet_create.yml).
	{"POST", lazyre.New(`^/v2/droplets$`), []string{"droplet:create", "tag:create", "image:read"}},
	{"DELETE", lazyre.New(`^/v2/droplets$`), []string{"droplet:delete", "tag:read"}},
	{"GET", lazyre.New(`^/v2/droplets/\d+$`), []string{"droplet:read"}},
	{"DELETE", lazyre.New(`^/v2/droplets/\d+$`), []string{"droplet:delete"}},
	{"GET", lazyre.New(`^/v2/droplets/\d+/actions(/\d+)?$`), []string{"droplet:read"}},
	{"POST", lazyre.New(`^/v2/droplets/\d+/actions$`), []string{"droplet:update"}},
	{"GET", lazyre.New(`^/v2/actions(/\d+)?$`), []string{"actions:read"}},
	{"GET", lazyre.New(`^/v2/account$`), []string{"account:read"}},
	{"GET", lazyre.New(`^/v2/account/keys(/[^/]+)?$`), []string{"ssh_key:read"}},
	{"POST", lazyre.New(`^/v2/account/keys$`), []string{"ssh_key:create"}},
	{"DELETE", lazyre.New(`^/v2/account/keys/[^/]+$`), []string{"ssh_key:delete"}},
	{"GET", lazyre.New(`^/v2/regions$`), []string{"regions:read"}},
	{"GET", lazyre.New(`^/v2/sizes$`), []string{"sizes:read"}},
	{"GET", lazyre.New(`^/v2/images(/[^/]+)?$`), []string{"image:read"}},
	{"GET", lazyre.New(`^/v2/domains(/[^/]+(/records(/\d+)?)?)?$`), []string{"domain:read"}},
	{"POST", lazyre.New(`^/v2/domains(/[^/]+/records)?$`), []string{"domain:create"}},
	{"PUT", lazyre.New(`^/v2/domains/[^/]+/records/\d+$`), []string{"domain:update"}},
	{"PATCH", lazyre.New(`^/v2/domains/[^/]+/records/\d+$`), []string{"domain:update"}},
	{"DELETE", lazyre.New(`^/v2/domains/[^/]+(/records/\d+)?$`), []string{"domain:delete"}},
}

// RequiredScopes returns the token scopes DigitalOcean requires for a request, nil when brine
// does not know the endpoint.
func RequiredScopes(method, path string) []string {
	for _, r := range scopeRoutes {
		if r.method == method && r.path.MatchString(path) {
			return r.scopes
		}
	}
	return nil
}

// withScopeHint rewrites a 403's error message to name the scopes the request needed.
func withScopeHint(req *http.Request, resp *http.Response) *http.Response {
	scopes := RequiredScopes(req.Method, req.URL.Path)
	if len(scopes) == 0 {
		return resp
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if err != nil {
		body = nil
	}
	var e map[string]any
	if json.Unmarshal(body, &e) != nil || e == nil {
		e = map[string]any{"id": "forbidden"}
	}
	msg, _ := e["message"].(string)
	hint := fmt.Sprintf("the API token lacks a scope that %s %s needs: it needs %s (give the token these scopes, or use a full-access token)",
		req.Method, req.URL.Path, strings.Join(scopes, ", "))
	if msg != "" {
		hint = msg + "; " + hint
	}
	e["message"] = hint
	out, _ := json.Marshal(e)
	resp.Body = io.NopCloser(bytes.NewReader(out))
	resp.ContentLength = int64(len(out))
	resp.Header.Del("Content-Length")
	return resp
}
