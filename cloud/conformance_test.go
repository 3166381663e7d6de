package cloud_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/brinecm/brine/cloud"
	"github.com/brinecm/brine/cloud/dosim"
	"github.com/digitalocean/godo"
	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
)

// The conformance check does not depend on our reading of the API: every request brine (and
// the test, for the endpoints brine's flows reach only on error) sends to dosim, and every
// answer, is validated against DigitalOcean's own OpenAPI schemas, and every answer is decoded
// strictly (no unknown field) into godo's types.
//
// The schemas are vendored in testdata/openapi/spec: the files of
// github.com/digitalocean/openapi at commit 7c1300c479fed9c353cda9fc21cd968619552304
// (2026-08-07) that the paths brine uses reference, unchanged, under a root trimmed to those
// paths by testdata/openapi/vendor.py (which says how to refresh them).
const specCommit = "7c1300c479fed9c353cda9fc21cd968619552304"

// conformance validates each round trip against the spec and godo's types.
type conformance struct {
	t      *testing.T
	base   http.RoundTripper
	router routers.Router

	mu       sync.Mutex
	covered  map[string]int // "METHOD /spec/path STATUS"
	problems []string
}

func newConformance(t *testing.T) *conformance {
	t.Helper()
	loader := openapi3.NewLoader()
	loader.IsExternalRefsAllowed = true
	doc, err := loader.LoadFromFile("testdata/openapi/spec/DigitalOcean-public.v2.yaml")
	if err != nil {
		t.Fatalf("load the OpenAPI description (commit %s): %v", specCommit, err)
	}
	// The description's own examples do not all match its schemas (a GPU droplet's
	// next_backup_window is null where the schema is not nullable); the schemas are what
	// matters here.
	router, err := legacy.NewRouter(doc, openapi3.DisableExamplesValidation())
	if err != nil {
		t.Fatal(err)
	}
	return &conformance{t: t, base: http.DefaultTransport, router: router, covered: map[string]int{}}
}

func (c *conformance) fail(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.problems = append(c.problems, fmt.Sprintf(format, args...))
}

func (c *conformance) RoundTrip(req *http.Request) (*http.Response, error) {
	var reqBody []byte
	if req.Body != nil {
		reqBody, _ = io.ReadAll(req.Body)
		req.Body.Close()
		req.Body = io.NopCloser(bytes.NewReader(reqBody))
	}
	resp, err := c.base.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	respBody, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(respBody))
	c.check(req, reqBody, resp, respBody)
	return resp, nil
}

func (c *conformance) check(req *http.Request, reqBody []byte, resp *http.Response, respBody []byte) {
	// Match the request as sent to DigitalOcean's own server.
	u := *req.URL
	u.Scheme, u.Host = "https", "api.digitalocean.com"
	sreq, _ := http.NewRequestWithContext(context.Background(), req.Method, u.String(), bytes.NewReader(reqBody))
	sreq.Header = req.Header.Clone()
	what := req.Method + " " + req.URL.RequestURI()
	route, params, err := c.router.FindRoute(sreq)
	if err != nil {
		c.fail("%s: not an endpoint of the vendored spec: %v", what, err)
		return
	}
	c.mu.Lock()
	c.covered[fmt.Sprintf("%s %s %d", req.Method, route.Path, resp.StatusCode)]++
	c.mu.Unlock()
	opts := &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, MultiError: true}
	in := &openapi3filter.RequestValidationInput{Request: sreq, PathParams: params, Route: route, Options: opts}
	if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil && req.Context().Value(invalidRequest{}) == nil {
		c.fail("%s: request does not match the spec: %s\n%s", what, brief(err), reqBody)
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: resp.StatusCode,
		Header: resp.Header, Options: opts}
	out.SetBodyBytes(respBody)
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil && !nullBackupWindowOnly(err) {
		c.fail("%s: %d response does not match the spec: %s", what, resp.StatusCode, brief(err))
	}
	if err := decodeStrict(req.Method, route.Path, resp.StatusCode, respBody); err != nil {
		c.fail("%s: %d response does not decode into godo's types: %v\n%s", what, resp.StatusCode, err, respBody)
	}
}

// invalidRequest marks (as a context key) a request the test sends invalid on purpose, to see
// the API's answer to it.
type invalidRequest struct{}

// nullBackupWindowOnly reports whether the only complaint is a droplet's next_backup_window
// being null. The description makes droplet_next_backup_window.yml nullable but wraps it in an
// allOf with a description, which kin-openapi then takes as not nullable; DigitalOcean sends null
// for a droplet without backups, as the description's own examples show.
func nullBackupWindowOnly(err error) bool {
	for _, l := range strings.Split(brief(err), " | ") {
		if strings.Contains(l, "Error at") && !strings.Contains(l, "/next_backup_window\"") {
			return false
		}
	}
	return strings.Contains(err.Error(), "next_backup_window") && strings.Contains(err.Error(), "not nullable")
}

// brief drops the schemas kin-openapi quotes in its errors, keeping what and where.
func brief(err error) string {
	var out []string
	for _, l := range strings.Split(err.Error(), "\n") {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t") || t == "Schema:" || t == "Value:" || strings.HasPrefix(t, "{") || strings.HasPrefix(t, "}") {
			continue
		}
		out = append(out, t)
	}
	return strings.Join(out, " | ")
}

// decodeStrict decodes an answer into godo's types, refusing fields godo does not know.
func decodeStrict(method, path string, status int, body []byte) error {
	if status == http.StatusNoContent {
		if len(bytes.TrimSpace(body)) != 0 {
			return fmt.Errorf("a 204 with a body")
		}
		return nil
	}
	var v any
	switch {
	case status >= 400:
		v = &struct {
			ID        string `json:"id"`
			Message   string `json:"message"`
			RequestID string `json:"request_id"`
		}{}
	case path == "/v2/droplets" && method == "GET":
		v = &struct {
			Droplets []godo.Droplet `json:"droplets"`
			Links    *godo.Links    `json:"links"`
			Meta     *godo.Meta     `json:"meta"`
		}{}
	case path == "/v2/droplets" && method == "POST":
		v = &struct {
			Droplet  *godo.Droplet  `json:"droplet"`
			Droplets []godo.Droplet `json:"droplets"`
			Links    *godo.Links    `json:"links"`
		}{}
	case path == "/v2/droplets/{droplet_id}":
		v = &struct {
			Droplet godo.Droplet `json:"droplet"`
		}{}
	case path == "/v2/droplets/{droplet_id}/actions" || path == "/v2/actions":
		v = &struct {
			Actions []godo.Action `json:"actions"`
			Links   *godo.Links   `json:"links"`
			Meta    *godo.Meta    `json:"meta"`
		}{}
	case path == "/v2/actions/{action_id}":
		v = &struct {
			Action godo.Action `json:"action"`
		}{}
	case path == "/v2/regions":
		v = &struct {
			Regions []godo.Region `json:"regions"`
			Links   *godo.Links   `json:"links"`
			Meta    *godo.Meta    `json:"meta"`
		}{}
	case path == "/v2/sizes":
		v = &struct {
			Sizes []godo.Size `json:"sizes"`
			Links *godo.Links `json:"links"`
			Meta  *godo.Meta  `json:"meta"`
		}{}
	case path == "/v2/images/{image_id}":
		v = &struct {
			Image godo.Image `json:"image"`
		}{}
	case path == "/v2/domains":
		v = &struct {
			Domain godo.Domain `json:"domain"`
		}{}
	case path == "/v2/domains/{domain_name}/records":
		if method == "POST" {
			v = &struct {
				Record godo.DomainRecord `json:"domain_record"`
			}{}
		} else {
			v = &struct {
				Records []godo.DomainRecord `json:"domain_records"`
				Links   *godo.Links         `json:"links"`
				Meta    *godo.Meta          `json:"meta"`
			}{}
		}
	case path == "/v2/domains/{domain_name}/records/{domain_record_id}":
		v = &struct {
			Record godo.DomainRecord `json:"domain_record"`
		}{}
	default:
		return fmt.Errorf("no godo type known for %s %s", method, path)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// TestConformanceWithOpenAPIAndGodo runs brine's operations, and the endpoints' error answers,
// against dosim with its faults on, through the conformance check.
func TestConformanceWithOpenAPIAndGodo(t *testing.T) {
	conf := newConformance(t)
	e := newEnv(t, dosim.Options{DeleteDelay: 20 * time.Millisecond, ListDelay: 20 * time.Millisecond,
		CreateErrors: func(n string) bool { return n == "doomed" }}, func(o *cloud.ClientOptions) { o.Transport = conf })
	ctx := context.Background()
	cfg := mustConfig(t, testConfig)

	// brine's flows: sync (catalog check, names, actions, create, poll), list, destroy (delete,
	// wait, destroy action), a failed create (its errored action), DNS.
	e.sim.Inject(dosim.Fault{Method: "GET", Path: "/v2/regions", Status: http.StatusTooManyRequests})
	e.sim.Inject(dosim.Fault{Method: "GET", Path: "/v2/sizes", Status: http.StatusServiceUnavailable})
	if _, err := e.c.Sync(ctx, cloud.SyncRequest{Config: cfg, Map: "production", Master: e.master}); err != nil {
		t.Fatal(err)
	}
	// A new droplet is listed ListDelay after its create (sync may be done sooner): destroy
	// finds it by name once it is listed.
	for listed := false; !listed; {
		ds, err := e.c.List(ctx, cloud.ListOptions{All: true})
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range ds {
			listed = listed || d.Name == "web-5"
		}
	}
	if _, err := e.c.Destroy(ctx, cloud.DestroyRequest{Names: []string{"web-5"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.Create(ctx, cloud.CreateRequest{Profile: cfg.Profiles["db"], Names: []string{"doomed"}, Master: e.master}); err == nil {
		t.Fatal("the doomed create succeeded")
	}
	golden := &cloud.Profile{Name: "golden", Region: "nyc", Size: "s-1vcpu-1gb", Image: fmt.Sprint(dosim.CustomImageID)}
	createOK(t, e, cloud.CreateRequest{Profile: golden, Names: []string{"golden-1"}})
	if _, _, err := e.do.Domains.Create(ctx, &godo.DomainCreateRequest{Name: "ghost.example"}); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"blue.example.net", "green.example.net", "blue.example.net"} {
		if _, err := e.c.DNSSet(ctx, cloud.DNSSetRequest{Domain: "ghost.example", Name: "www", Type: "CNAME", Value: v, TTL: 60}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.c.DNSSet(ctx, cloud.DNSSetRequest{Domain: "ghost.example", Name: "@", Type: "A", Value: "198.18.0.7"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.DNSList(ctx, "ghost.example"); err != nil {
		t.Fatal(err)
	}

	// Endpoints and answers brine's flows reach only on error or on other paths.
	recs, _, _ := e.do.Domains.Records(ctx, "ghost.example", nil)
	var aID int
	for _, r := range recs {
		if r.Type == "A" {
			aID = r.ID
		}
	}
	_, _, _ = e.do.Domains.Record(ctx, "ghost.example", aID)
	patch, _ := e.do.NewRequest(ctx, http.MethodPatch, "v2/domains/ghost.example/records/"+fmt.Sprint(aID), map[string]any{"type": "A", "ttl": 120})
	if _, err := e.do.Do(ctx, patch, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.do.Domains.DeleteRecord(ctx, "ghost.example", aID); err != nil {
		t.Fatal(err)
	}
	_, _, _ = e.do.Domains.Record(ctx, "ghost.example", aID)                                                                                    // 404
	_, _, _ = e.do.Domains.CreateRecord(ctx, "ghost.example", &godo.DomainRecordEditRequest{Type: "CNAME", Name: "x", Data: "no.dot", TTL: 60}) // 422
	ds, _, _ := e.do.Droplets.List(ctx, nil)
	_, _, _ = e.do.Droplets.Get(ctx, ds[0].ID)
	_, _, _ = e.do.Droplets.Get(ctx, 1) // 404
	_, _ = e.do.Droplets.Delete(ctx, 1) // 404
	_, _, _ = e.do.Droplets.ListByName(ctx, "web-1", nil)
	_, _, _ = e.do.Droplets.Actions(ctx, ds[0].ID, nil)
	_, _, _ = e.do.Actions.List(ctx, nil)
	bad := context.WithValue(ctx, invalidRequest{}, true)
	_, _, _ = e.do.Droplets.Create(bad, &godo.DropletCreateRequest{Name: "bad-", Region: "ams3", Size: "s-1vcpu-1gb",
		Image: godo.DropletCreateImage{Slug: "debian-12-x64"}}) // 422
	_, _, _ = e.do.Actions.Get(ctx, 1) // 404
	_, _ = e.do.Droplets.DeleteByTag(ctx, "brine-map:production")
	// A token without the scope, and a bad token.
	scoped := newEnv(t, dosim.Options{Scopes: []string{"domain:read"}}, func(o *cloud.ClientOptions) { o.Transport = conf })
	_, _ = scoped.c.List(ctx, cloud.ListOptions{})
	wrong, _ := cloud.NewClient(cloud.ClientOptions{Token: cloud.NewToken("wrong"), APIURL: scoped.url, RequestsPerMinute: -1, Transport: conf})
	_, _ = wrong.List(ctx, cloud.ListOptions{})

	conf.mu.Lock()
	defer conf.mu.Unlock()
	for _, p := range conf.problems {
		t.Error(p)
	}
	want := []string{
		"GET /v2/droplets 200", "GET /v2/droplets 401", "GET /v2/droplets 403", "GET /v2/regions 429", "GET /v2/sizes 503",
		"POST /v2/droplets 202", "POST /v2/droplets 422", "DELETE /v2/droplets 204",
		"GET /v2/droplets/{droplet_id} 200", "GET /v2/droplets/{droplet_id} 404",
		"DELETE /v2/droplets/{droplet_id} 204", "DELETE /v2/droplets/{droplet_id} 404",
		"GET /v2/droplets/{droplet_id}/actions 200", "GET /v2/actions 200", "GET /v2/actions/{action_id} 200",
		"GET /v2/actions/{action_id} 404", "GET /v2/regions 200", "GET /v2/sizes 200", "GET /v2/images/{image_id} 200",
		"POST /v2/domains 201", "GET /v2/domains/{domain_name}/records 200", "POST /v2/domains/{domain_name}/records 201",
		"POST /v2/domains/{domain_name}/records 422",
		"GET /v2/domains/{domain_name}/records/{domain_record_id} 200", "GET /v2/domains/{domain_name}/records/{domain_record_id} 404",
		"PUT /v2/domains/{domain_name}/records/{domain_record_id} 200", "PATCH /v2/domains/{domain_name}/records/{domain_record_id} 200",
		"DELETE /v2/domains/{domain_name}/records/{domain_record_id} 204",
	}
	var missing []string
	for _, w := range want {
		if conf.covered[w] == 0 {
			missing = append(missing, w)
		}
	}
	if len(missing) > 0 {
		var got []string
		for k := range conf.covered {
			got = append(got, k)
		}
		sort.Strings(got)
		t.Errorf("not exercised: %s\nexercised: %s", strings.Join(missing, "; "), strings.Join(got, "; "))
	}
}
