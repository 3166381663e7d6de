package testbed

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
)

// Hosts reach the machine and each other, never beyond (the bridge does not forward). A host
// that installs real Debian packages reaches the machine's Debian mirror through a proxy the
// cluster runs on its bridge address: the machine's apt sources name the mirrors it may reach,
// nothing else; the packages it fetched are kept on the machine, so a second run downloads
// nothing.

// MirrorCacheDir is where the mirror proxy keeps the package files (pool/.../*.deb) it fetched,
// on the machine, across runs: a file of the pool never changes once published, and apt checks
// every file's hash against the signed index anyway.
var MirrorCacheDir = "/var/cache/brine-testbed/apt"

// machineArchives is the machine's own apt cache: a package the machine downloaded (by the
// pool's file name) is served from there.
const machineArchives = "/var/cache/apt/archives"

// machineSources are the apt source files of the machine a Debian host copies.
func machineSources() (map[string][]byte, error) {
	files := map[string][]byte{}
	if b, err := os.ReadFile("/etc/apt/sources.list"); err == nil {
		files["etc/apt/sources.list"] = b
	}
	for _, pat := range []string{"/etc/apt/sources.list.d/*.list", "/etc/apt/sources.list.d/*.sources"} {
		m, _ := filepath.Glob(pat)
		for _, p := range m {
			b, err := os.ReadFile(p)
			if err != nil {
				return nil, fmt.Errorf("testbed: %w", err)
			}
			files[strings.TrimPrefix(p, "/")] = b
		}
	}
	return files, nil
}

// sourceURIs returns the URIs of the machine's apt sources (one-line and deb822 formats),
// with, for each, a file apt fetches first (dists/SUITE/InRelease) when known.
func sourceURIs(files map[string][]byte) (uris []string, probe string) {
	add := func(u, suite string) {
		u = strings.TrimSuffix(u, "/") + "/"
		if !slices.Contains(uris, u) {
			uris = append(uris, u)
		}
		if probe == "" && suite != "" && !strings.HasSuffix(suite, "/") {
			probe = u + "dists/" + suite + "/InRelease"
		}
	}
	for name, b := range files {
		deb822 := strings.HasSuffix(name, ".sources")
		var cur []string
		var suite string
		enabled := true
		flush := func() {
			if enabled {
				for _, u := range cur {
					add(u, suite)
				}
			}
			cur, suite, enabled = nil, "", true
		}
		sc := bufio.NewScanner(strings.NewReader(string(b)))
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if strings.HasPrefix(line, "#") {
				continue
			}
			if !deb822 {
				f := strings.Fields(line)
				if len(f) < 3 || (f[0] != "deb" && f[0] != "deb-src") {
					continue
				}
				f = f[1:]
				if strings.HasPrefix(f[0], "[") { // options: [a=b c=d]
					for len(f) > 0 && !strings.HasSuffix(f[0], "]") {
						f = f[1:]
					}
					if len(f) > 0 {
						f = f[1:]
					}
				}
				if len(f) >= 2 {
					add(f[0], f[1])
				}
				continue
			}
			if line == "" {
				flush()
				continue
			}
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			switch strings.ToLower(strings.TrimSpace(k)) {
			case "uris":
				cur = strings.Fields(v)
			case "suites":
				if f := strings.Fields(v); len(f) > 0 {
					suite = f[0]
				}
			case "enabled":
				enabled = strings.TrimSpace(v) != "no"
			}
		}
		flush()
	}
	slices.Sort(uris)
	return uris, probe
}

// DebianReachable reports why hosts could not install packages from the machine's Debian
// mirror, or nil if they can: the machine has apt sources, and the first of them answers a
// request for its suite's InRelease within timeout.
func DebianReachable(ctx context.Context, timeout time.Duration) error {
	files, err := machineSources()
	if err != nil {
		return err
	}
	uris, probe := sourceURIs(files)
	if len(uris) == 0 || probe == "" {
		return errors.New("the machine has no apt sources (/etc/apt/sources.list, /etc/apt/sources.list.d)")
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, probe, nil)
	if err != nil {
		return err
	}
	resp, err := upstreamClient.Do(req)
	if err != nil {
		return fmt.Errorf("the Debian mirror is unreachable: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("the Debian mirror is unreachable: HEAD %s: %s", probe, resp.Status)
	}
	return nil
}

// upstreamClient fetches from the mirrors, through the machine's own proxy if it has one.
var upstreamClient = &http.Client{Transport: &http.Transport{
	Proxy:                 http.ProxyFromEnvironment,
	DialContext:           (&net.Dialer{Timeout: 15 * time.Second}).DialContext,
	TLSHandshakeTimeout:   15 * time.Second,
	ResponseHeaderTimeout: 60 * time.Second,
	MaxIdleConnsPerHost:   8,
}}

// mirrorProxy is an HTTP proxy for apt, on the cluster's bridge address. It serves GET and
// HEAD of http:// URLs, and CONNECT (for https sources), to the hosts of the machine's apt
// sources only; everything else is refused.
type mirrorProxy struct {
	allowed map[string]bool // host:port
	cache   string
	ln      net.Listener
	srv     *http.Server
	rp      *httputil.ReverseProxy
	done    chan struct{}

	mu   sync.Mutex // guards hits and fetches
	hits int        // package files served from a cache
	gets int        // package files fetched from a mirror
}

func startMirrorProxy(addr string, uris []string) (*mirrorProxy, error) {
	p := &mirrorProxy{allowed: map[string]bool{}, cache: MirrorCacheDir, done: make(chan struct{})}
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			continue // file:, cdrom:, mirror+...: nothing to proxy
		}
		port := u.Port()
		if port == "" {
			port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
		}
		p.allowed[net.JoinHostPort(u.Hostname(), port)] = true
	}
	if len(p.allowed) == 0 {
		return nil, errors.New("testbed: the machine's apt sources name no http or https mirror")
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite:   func(r *httputil.ProxyRequest) { r.Out.URL = r.In.URL; r.Out.Host = r.In.URL.Host },
		Transport: upstreamClient.Transport,
		ErrorLog:  log.New(io.Discard, "", 0), // a host hanging up mid-download is no news
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("testbed: mirror proxy: %w", err)
	}
	p.ln = ln
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute,
		MaxHeaderBytes: 64 << 10, ErrorLog: log.New(io.Discard, "", 0)}
	go func() {
		defer close(p.done)
		_ = p.srv.Serve(ln)
	}()
	return p, nil
}

// URL is the proxy's URL for apt's Acquire::http::Proxy.
func (p *mirrorProxy) URL() string { return "http://" + p.ln.Addr().String() + "/" }

func (p *mirrorProxy) close() {
	_ = p.srv.Close()
	<-p.done
}

// stats returns how many package files came from a cache and from a mirror.
func (p *mirrorProxy) stats() (cached, fetched int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.hits, p.gets
}

func (p *mirrorProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodConnect {
		p.connect(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "brine testbed mirror proxy: GET, HEAD and CONNECT only", http.StatusMethodNotAllowed)
		return
	}
	u := r.URL
	if u.Scheme != "http" || u.Host == "" {
		http.Error(w, "brine testbed mirror proxy: absolute http:// URLs only", http.StatusBadRequest)
		return
	}
	hp := u.Host
	if u.Port() == "" {
		hp = net.JoinHostPort(u.Hostname(), "80")
	}
	if !p.allowed[hp] {
		http.Error(w, "brine testbed mirror proxy: "+u.Hostname()+" is not one of the machine's apt sources", http.StatusForbidden)
		return
	}
	clean := path.Clean("/" + u.Path)
	if r.Method == http.MethodGet && strings.Contains(clean, "/pool/") && strings.HasSuffix(clean, ".deb") && r.Header.Get("Range") == "" {
		p.servePackage(w, r, hp, clean)
		return
	}
	p.rp.ServeHTTP(w, r)
}

// servePackage serves a pool file from the machine's caches, or fetches it, keeps it and serves it.
func (p *mirrorProxy) servePackage(w http.ResponseWriter, r *http.Request, hostport, clean string) {
	cached := filepath.Join(p.cache, strings.ReplaceAll(hostport, ":", "_"), filepath.FromSlash(clean))
	for _, f := range []string{cached, filepath.Join(machineArchives, path.Base(clean))} {
		if fh, err := os.Open(f); err == nil {
			fi, serr := fh.Stat()
			if serr == nil && fi.Mode().IsRegular() && fi.Size() > 0 {
				p.mu.Lock()
				p.hits++
				p.mu.Unlock()
				w.Header().Set("Content-Type", "application/vnd.debian.binary-package")
				http.ServeContent(w, r, path.Base(clean), fi.ModTime(), fh)
				fh.Close()
				return
			}
			fh.Close()
		}
	}
	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, r.URL.String(), nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	resp, err := upstreamClient.Do(req)
	if err != nil {
		http.Error(w, "brine testbed mirror proxy: "+err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for _, h := range []string{"Content-Type", "Content-Length", "Last-Modified", "ETag"} {
		if v := resp.Header.Get(h); v != "" {
			w.Header().Set(h, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(w, resp.Body)
		return
	}
	p.mu.Lock()
	p.gets++
	p.mu.Unlock()
	// Keep it only when it arrived whole; a concurrent fetch of the same file renames the same
	// bytes into place.
	var tmp *os.File
	if err := os.MkdirAll(filepath.Dir(cached), 0o755); err == nil {
		tmp, _ = os.CreateTemp(filepath.Dir(cached), ".part-")
	}
	var dst io.Writer = w
	if tmp != nil {
		defer os.Remove(tmp.Name())
		dst = io.MultiWriter(w, tmp)
	}
	n, err := io.Copy(dst, resp.Body)
	if tmp == nil {
		return
	}
	if cerr := tmp.Close(); err == nil && cerr == nil && (resp.ContentLength < 0 || n == resp.ContentLength) {
		_ = os.Rename(tmp.Name(), cached)
	}
}

// connect tunnels to an allowed https mirror.
func (p *mirrorProxy) connect(w http.ResponseWriter, r *http.Request) {
	if !p.allowed[r.Host] {
		http.Error(w, "brine testbed mirror proxy: "+r.Host+" is not one of the machine's apt sources", http.StatusForbidden)
		return
	}
	up, err := net.DialTimeout("tcp", r.Host, 15*time.Second)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		up.Close()
		http.Error(w, "cannot tunnel", http.StatusInternalServerError)
		return
	}
	conn, buf, err := hj.Hijack()
	if err != nil {
		up.Close()
		return
	}
	_, _ = conn.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n"))
	go func() {
		if buf.Reader.Buffered() > 0 {
			_, _ = io.CopyN(up, buf, int64(buf.Reader.Buffered()))
		}
		_, _ = io.Copy(up, conn)
		up.Close()
	}()
	_, _ = io.Copy(conn, up)
	conn.Close()
}

// EnableDebian lets every host install packages from the machine's Debian mirror: it starts
// the cluster's mirror proxy on the bridge address (it lives as long as this Cluster value: a
// cluster attached or left running by another process has none), gives every host the
// machine's apt sources with the proxy as apt's, and runs apt-get update in each. Hosts added
// later (AddHost) get the same. Check DebianReachable first for a clear reason when the mirror
// cannot be reached.
func (c *Cluster) EnableDebian(ctx context.Context) error {
	files, err := machineSources()
	if err != nil {
		return err
	}
	uris, _ := sourceURIs(files)
	c.mu.Lock()
	if c.mirror != nil {
		c.mu.Unlock()
		return nil
	}
	p, err := startMirrorProxy(net.JoinHostPort(c.BridgeAddr(), "0"), uris)
	if err != nil {
		c.mu.Unlock()
		return err
	}
	c.mirror = p
	c.st.Debian = true
	err = c.saveLocked()
	c.mu.Unlock()
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, h := range c.Hosts() {
		g.Go(func() error { return h.enableDebian(gctx) })
	}
	return g.Wait()
}

// MirrorStats says how many package files the mirror proxy served from a cache on the machine
// and how many it fetched from a mirror.
func (c *Cluster) MirrorStats() (cached, fetched int) {
	c.mu.Lock()
	p := c.mirror
	c.mu.Unlock()
	if p == nil {
		return 0, 0
	}
	return p.stats()
}

// enableDebian gives the host the machine's apt sources, the proxy, and runs apt-get update.
func (h *Host) enableDebian(ctx context.Context) error {
	h.c.mu.Lock()
	p := h.c.mirror
	h.c.mu.Unlock()
	if p == nil {
		return fmt.Errorf("testbed: host %s: the cluster's mirror proxy does not run in this process", h.st.Name)
	}
	files, err := machineSources()
	if err != nil {
		return err
	}
	files["etc/apt/apt.conf.d/00brine-testbed-proxy"] = []byte(
		"// brine testbed: hosts reach the machine's Debian mirror through the cluster's proxy.\n" +
			"Acquire::http::Proxy \"" + p.URL() + "\";\n" +
			"Acquire::https::Proxy \"" + p.URL() + "\";\n")
	for rel, b := range files {
		dst := filepath.Join(h.Root(), rel)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return fmt.Errorf("testbed: host %s: %w", h.st.Name, err)
		}
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			return fmt.Errorf("testbed: host %s: %w", h.st.Name, err)
		}
	}
	out, code, err := h.Sh(ctx, "apt-get -q update")
	if err != nil {
		return err
	}
	if code != 0 || strings.Contains(out, "W: ") || strings.Contains(out, "E: ") {
		return fmt.Errorf("testbed: apt-get update from the Debian mirror on %s: exit %s: %s", h.Name(), strconv.Itoa(code), trimOut([]byte(out)))
	}
	return nil
}
