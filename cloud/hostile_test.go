package cloud_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/brinecm/brine/cloud"
)

// A hostile (or broken) API: listings whose "next" page never ends, and a 403 with a huge body.
// brine stops following pages at its bound and keeps a bounded error message.
func TestHostileAPIBounded(t *testing.T) {
	var lists atomic.Int64
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.URL.Path == "/v2/droplets" && r.Method == "GET":
			n := lists.Add(1)
			page := r.URL.Query().Get("page")
			fmt.Fprintf(w, `{"droplets":[{"id":%d,"name":"d-%d","tags":["brine"]}],"links":{"pages":{"next":"http://%s/v2/droplets?page=%s9"}},"meta":{"total":1000000}}`,
				n, n, r.Host, page)
		case r.URL.Path == "/v2/domains/example.com/records":
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprint(w, `{"id":"forbidden","message":"`+strings.Repeat("x", 1<<20)+`"}`)
		default:
			http.NotFound(w, r)
		}
	}))
	defer hs.Close()
	c, err := cloud.NewClient(cloud.ClientOptions{Token: cloud.NewToken("t"), APIURL: hs.URL + "/", RequestsPerMinute: -1})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.List(context.Background(), cloud.ListOptions{})
	if err == nil || !strings.Contains(err.Error(), "more than 500 pages") {
		t.Fatalf("endless pages: %v", err)
	}
	if n := lists.Load(); n != 500 {
		t.Fatalf("%d list requests", n)
	}
	_, err = c.DNSList(context.Background(), "example.com")
	if err == nil || !strings.Contains(err.Error(), "domain:read") || len(err.Error()) > 4096 {
		t.Fatalf("huge 403: %d bytes: %.200s", len(err.Error()), err)
	}
}
