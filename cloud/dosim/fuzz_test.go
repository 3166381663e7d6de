package dosim_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/brinecm/brine/cloud/dosim"
)

// FuzzRequests feeds arbitrary bodies to every endpoint that decodes one: the simulator must
// answer with a status and never panic (DESIGN.md invariant 9; `brine cloud sim` listens).
func FuzzRequests(f *testing.F) {
	f.Add("POST", "/v2/droplets", `{"name":"a","region":"ams3","size":"s-1vcpu-1gb","image":"debian-12-x64"}`)
	f.Add("POST", "/v2/droplets", `{"names":["a","b"],"region":"ams3","size":"s-1vcpu-1gb","image":155133635,"ssh_keys":[512189]}`)
	f.Add("POST", "/v2/droplets/3164445/actions", `{"type":"reboot"}`)
	f.Add("POST", "/v2/account/keys", `{"name":"k","public_key":"ssh-ed25519 AAAA x"}`)
	f.Add("POST", "/v2/domains", `{"name":"example.com","ip_address":"198.18.0.1"}`)
	f.Add("POST", "/v2/domains/example.com/records", `{"type":"MX","name":"@","data":"mx.example.com","priority":10}`)
	f.Add("PUT", "/v2/domains/example.com/records/3164446", `{"data":"198.18.0.2"}`)
	f.Add("GET", "/v2/droplets?page=-1&per_page=999999999", ``)
	sim := dosim.New(dosim.Options{Token: "t", PerMinute: -1, PerHour: -1, DropletLimit: 1 << 20})
	f.Cleanup(func() { sim.Close() })
	setup := httptest.NewRequest("POST", "/v2/domains", strings.NewReader(`{"name":"example.com"}`))
	setup.Header.Set("Authorization", "Bearer t")
	sim.ServeHTTP(httptest.NewRecorder(), setup)
	f.Fuzz(func(t *testing.T, method, path, body string) {
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		switch method {
		case "GET", "POST", "PUT", "PATCH", "DELETE":
		default:
			method = "POST"
		}
		req, err := http.NewRequest(method, "http://sim"+path, strings.NewReader(body))
		if err != nil {
			return
		}
		req.Header.Set("Authorization", "Bearer t")
		w := httptest.NewRecorder()
		sim.ServeHTTP(w, req)
		if w.Code < 200 || w.Code > 599 {
			t.Fatalf("status %d", w.Code)
		}
	})
}
