package cloud

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/agext/levenshtein"
	"github.com/brinecm/brine/internal/lazyre"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclparse"
)

// Config is a parsed cloud.hcl: the provider, the droplet profiles and the maps.
type Config struct {
	Provider Provider
	Profiles map[string]*Profile
	Maps     map[string]*Map
	// BundleDir is where the bundles profiles name live: bundle NAME is the directory
	// BundleDir/NAME. cloud.hcl's bundle_dir, relative to the file; default the file's directory.
	BundleDir string
	// Files holds the parsed sources, for printing diagnostics with their source lines.
	Files map[string]*hcl.File
}

// Provider configures the DigitalOcean API.
type Provider struct {
	// TokenFile holds the API token when DIGITALOCEAN_TOKEN is not set.
	TokenFile string
	// APIURL overrides https://api.digitalocean.com/ (for the simulator).
	APIURL string
	// RequestsPerMinute paces API requests; zero means DefaultRequestsPerMinute.
	RequestsPerMinute int
}

// Profile says how to make one kind of droplet and what it becomes once it is a minion.
type Profile struct {
	Name       string
	Region     string
	Size       string
	Image      string
	SSHKeys    []string // key ids or fingerprints
	Tags       []string // extra tags; brine adds its own
	VPCUUID    string
	IPv6       bool
	Monitoring bool
	Groups     []string // the minion's groups
	Bundles    []string // bundles the master applies once the minion enrolled
	DefRange   hcl.Range
}

// Map names the droplets an environment should have.
type Map struct {
	Name     string
	Droplets []MapDroplet
	DefRange hcl.Range
}

// MapDroplet is one droplet block of a map: Names (given, or label-1..label-N from count) made
// with Profile.
type MapDroplet struct {
	Label   string
	Profile string
	Names   []string
}

// Wanted is one droplet a map asks for.
type Wanted struct {
	Name    string
	Profile string
}

// Want lists every droplet of the map, in the order written.
func (m *Map) Want() []Wanted {
	var out []Wanted
	for _, d := range m.Droplets {
		for _, n := range d.Names {
			out = append(out, Wanted{Name: n, Profile: d.Profile})
		}
	}
	return out
}

// Tag is the tag every droplet of the map carries, so that sync can find the map's extras.
func (m *Map) Tag() string { return "brine-map:" + m.Name }

type fileSchema struct {
	BundleDir *string         `hcl:"bundle_dir,optional"`
	Providers []providerBlock `hcl:"provider,block"`
	Profiles  []profileBlock  `hcl:"profile,block"`
	Maps      []mapBlock      `hcl:"map,block"`
}

type providerBlock struct {
	Type              string    `hcl:"type,label"`
	TokenFile         *string   `hcl:"token_file,optional"`
	APIURL            *string   `hcl:"api_url,optional"`
	RequestsPerMinute *int      `hcl:"requests_per_minute,optional"`
	DefRange          hcl.Range `hcl:",def_range"`
}

type profileBlock struct {
	Name       string    `hcl:"name,label"`
	Region     string    `hcl:"region"`
	Size       string    `hcl:"size"`
	Image      string    `hcl:"image"`
	SSHKeys    []string  `hcl:"ssh_keys,optional"`
	Tags       []string  `hcl:"tags,optional"`
	VPCUUID    string    `hcl:"vpc_uuid,optional"`
	IPv6       bool      `hcl:"ipv6,optional"`
	Monitoring bool      `hcl:"monitoring,optional"`
	Groups     []string  `hcl:"groups,optional"`
	Bundles    []string  `hcl:"bundles,optional"`
	DefRange   hcl.Range `hcl:",def_range"`
}

type mapBlock struct {
	Name     string         `hcl:"name,label"`
	Droplets []dropletBlock `hcl:"droplet,block"`
	DefRange hcl.Range      `hcl:",def_range"`
}

type dropletBlock struct {
	Label    string         `hcl:"label,label"`
	Profile  hcl.Expression `hcl:"profile"`
	Count    *int           `hcl:"count,optional"`
	Names    []string       `hcl:"names,optional"`
	DefRange hcl.Range      `hcl:",def_range"`
}

var (
	// nameRE is a droplet name brine accepts: a lower-case hostname that is also a valid
	// minion id (DESIGN.md invariant 11), since the droplet name becomes the minion id. It ends
	// with a letter or digit, as DigitalOcean requires (models/droplet_single_create.yml).
	nameRE = lazyre.New(`^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$`)
	// labelRE names profiles and maps; they end up in DigitalOcean tags.
	labelRE = lazyre.New(`^[a-z0-9][a-z0-9_-]{0,62}$`)
	tagRE   = lazyre.New(`^[a-zA-Z0-9_:\-]{1,255}$`)
	groupRE = lazyre.New(`^[a-z0-9][a-z0-9_.-]{0,62}$`)
)

// ValidName reports whether name can be a brine droplet (and minion) name.
func ValidName(name string) bool {
	return nameRE.MatchString(name) && !strings.Contains(name, "..")
}

// LoadConfig reads and checks a cloud.hcl file.
func LoadConfig(path string) (*Config, hcl.Diagnostics) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Cannot read the cloud configuration",
			Detail: fmt.Sprintf("%v. Pass the file with --config, or create cloud.hcl (see docs/cloud.md).", err)}}
	}
	return ParseConfig(src, path)
}

// ParseConfig parses and checks cloud.hcl source; filename is used in diagnostics.
func ParseConfig(src []byte, filename string) (*Config, hcl.Diagnostics) {
	p := hclparse.NewParser()
	f, diags := p.ParseHCL(src, filename)
	if diags.HasErrors() {
		return &Config{Files: p.Files()}, diags
	}
	var fs fileSchema
	diags = append(diags, gohcl.DecodeBody(f.Body, nil, &fs)...)
	cfg := &Config{Profiles: map[string]*Profile{}, Maps: map[string]*Map{}, Files: p.Files()}
	if diags.HasErrors() {
		return cfg, diags
	}
	cfg.BundleDir = filepath.Dir(filename)
	if fs.BundleDir != nil {
		cfg.BundleDir = *fs.BundleDir
		if !filepath.IsAbs(cfg.BundleDir) {
			cfg.BundleDir = filepath.Join(filepath.Dir(filename), cfg.BundleDir)
		}
	}
	for i, pb := range fs.Providers {
		if pb.Type != "digitalocean" {
			diags = append(diags, errorAt(pb.DefRange, "Unknown provider",
				fmt.Sprintf("brine provisions on DigitalOcean only; the provider block must be provider \"digitalocean\", not %q.", pb.Type)))
			continue
		}
		if i > 0 {
			diags = append(diags, errorAt(pb.DefRange, "Duplicate provider block", "Only one provider \"digitalocean\" block is allowed; merge the two."))
			continue
		}
		if pb.TokenFile != nil {
			cfg.Provider.TokenFile = *pb.TokenFile
		}
		if pb.APIURL != nil {
			cfg.Provider.APIURL = *pb.APIURL
		}
		if pb.RequestsPerMinute != nil {
			if *pb.RequestsPerMinute < 1 || *pb.RequestsPerMinute > 250 {
				diags = append(diags, errorAt(pb.DefRange, "Invalid requests_per_minute",
					"requests_per_minute must be between 1 and 250, DigitalOcean's limit."))
			}
			cfg.Provider.RequestsPerMinute = *pb.RequestsPerMinute
		}
	}
	for _, pb := range fs.Profiles {
		if prev, dup := cfg.Profiles[pb.Name]; dup {
			diags = append(diags, errorAt(pb.DefRange, "Duplicate profile",
				fmt.Sprintf("A profile %q is already defined at %s; profile names must be unique.", pb.Name, prev.DefRange)))
			continue
		}
		if !labelRE.MatchString(pb.Name) {
			diags = append(diags, errorAt(pb.DefRange, "Invalid profile name",
				fmt.Sprintf("Profile name %q must be lower-case letters, digits, '-' and '_', starting with a letter or digit.", pb.Name)))
		}
		for _, t := range pb.Tags {
			if !tagRE.MatchString(t) {
				diags = append(diags, errorAt(pb.DefRange, "Invalid tag",
					fmt.Sprintf("Tag %q is not valid on DigitalOcean: use letters, digits, ':', '-' and '_'.", t)))
			}
		}
		for _, g := range pb.Groups {
			if !groupRE.MatchString(g) {
				diags = append(diags, errorAt(pb.DefRange, "Invalid group",
					fmt.Sprintf("Group %q must be lower-case letters, digits, '.', '-' and '_'.", g)))
			}
		}
		for _, b := range pb.Bundles {
			if _, err := BundlePath("/", b); err != nil {
				diags = append(diags, errorAt(pb.DefRange, "Invalid bundle name", err.Error()+
					" Bundles are directories under bundle_dir (by default the directory of this file)."))
			}
		}
		cfg.Profiles[pb.Name] = &Profile{Name: pb.Name, Region: pb.Region, Size: pb.Size, Image: pb.Image,
			SSHKeys: pb.SSHKeys, Tags: pb.Tags, VPCUUID: pb.VPCUUID, IPv6: pb.IPv6, Monitoring: pb.Monitoring,
			Groups: pb.Groups, Bundles: pb.Bundles, DefRange: pb.DefRange}
	}
	for _, mb := range fs.Maps {
		if prev, dup := cfg.Maps[mb.Name]; dup {
			diags = append(diags, errorAt(mb.DefRange, "Duplicate map",
				fmt.Sprintf("A map %q is already defined at %s; map names must be unique.", mb.Name, prev.DefRange)))
			continue
		}
		if !labelRE.MatchString(mb.Name) {
			diags = append(diags, errorAt(mb.DefRange, "Invalid map name",
				fmt.Sprintf("Map name %q must be lower-case letters, digits, '-' and '_'.", mb.Name)))
		}
		m := &Map{Name: mb.Name, DefRange: mb.DefRange}
		seen := map[string]bool{}
		for _, db := range mb.Droplets {
			md, ds := decodeMapDroplet(db, cfg.Profiles)
			diags = append(diags, ds...)
			for _, n := range md.Names {
				if seen[n] {
					diags = append(diags, errorAt(db.DefRange, "Duplicate droplet name",
						fmt.Sprintf("The name %q appears twice in map %q; droplet names must be unique.", n, mb.Name)))
				}
				seen[n] = true
			}
			m.Droplets = append(m.Droplets, md)
		}
		cfg.Maps[mb.Name] = m
	}
	return cfg, diags
}

func decodeMapDroplet(db dropletBlock, profiles map[string]*Profile) (MapDroplet, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	md := MapDroplet{Label: db.Label}
	diags = append(diags, gohcl.DecodeExpression(db.Profile, nil, &md.Profile)...)
	if !diags.HasErrors() {
		if _, ok := profiles[md.Profile]; !ok {
			detail := fmt.Sprintf("There is no profile %q in this file.", md.Profile)
			if s := suggest(md.Profile, profiles); s != "" {
				detail += fmt.Sprintf(" Did you mean %q?", s)
			}
			r := db.Profile.Range()
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Unknown profile", Detail: detail, Subject: &r})
		}
	}
	switch {
	case db.Count != nil && db.Names != nil:
		diags = append(diags, errorAt(db.DefRange, "Both count and names",
			"Give either count (names become "+db.Label+"-1, "+db.Label+"-2, ...) or an explicit names list, not both."))
	case db.Count != nil:
		if *db.Count < 0 || *db.Count > 1000 {
			diags = append(diags, errorAt(db.DefRange, "Invalid count", "count must be between 0 and 1000."))
			break
		}
		for i := 1; i <= *db.Count; i++ {
			md.Names = append(md.Names, fmt.Sprintf("%s-%d", db.Label, i))
		}
	case db.Names != nil:
		md.Names = db.Names
	default:
		diags = append(diags, errorAt(db.DefRange, "Missing count or names",
			"Say how many droplets with count = N, or name them with names = [\"...\"]."))
	}
	for _, n := range md.Names {
		if !ValidName(n) {
			diags = append(diags, errorAt(db.DefRange, "Invalid droplet name",
				fmt.Sprintf("%q cannot be a droplet name: it becomes the minion id, so use lower-case letters, digits, '.' and '-' (at most 63, starting and ending with a letter or digit).", n)))
		}
	}
	return md, diags
}

func errorAt(r hcl.Range, summary, detail string) *hcl.Diagnostic {
	return &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: detail, Subject: r.Ptr()}
}

// suggest returns the closest profile name to name, or "" when none is close.
func suggest(name string, profiles map[string]*Profile) string {
	names := make([]string, 0, len(profiles))
	for n := range profiles {
		names = append(names, n)
	}
	sort.Strings(names)
	best, bestD := "", 3
	for _, n := range names {
		if d := levenshtein.Distance(name, n, nil); d < bestD {
			best, bestD = n, d
		}
	}
	return best
}

// Profile returns the named profile, or an error that lists the known ones.
func (c *Config) Profile(name string) (*Profile, error) {
	if p, ok := c.Profiles[name]; ok {
		return p, nil
	}
	msg := fmt.Sprintf("no profile %q in the cloud configuration", name)
	if s := suggest(name, c.Profiles); s != "" {
		msg += fmt.Sprintf("; did you mean %q?", s)
	}
	return nil, fmt.Errorf("%s", msg)
}

// BundlePath returns the directory of bundle name under dir. A name is a relative path that
// stays inside dir ("app", "web/nginx"), never "..", absolute or empty.
func BundlePath(dir, name string) (string, error) {
	if name == "" || !filepath.IsLocal(name) {
		return "", fmt.Errorf("bundle name %q must be a relative path inside bundle_dir.", name)
	}
	return filepath.Join(dir, name), nil
}

// CheckBundles makes sure every bundle of the profiles is a directory, so that a create stops
// before making any droplet that could never converge.
func (c *Config) CheckBundles(profiles ...*Profile) error {
	for _, p := range profiles {
		for _, b := range p.Bundles {
			dir, err := BundlePath(c.BundleDir, b)
			if err != nil {
				return fmt.Errorf("profile %s: %w", p.Name, err)
			}
			if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
				return fmt.Errorf("profile %s: bundle %q: no directory %s (bundles live under bundle_dir in cloud.hcl)", p.Name, b, dir)
			}
		}
	}
	return nil
}

// Map returns the named map.
func (c *Config) Map(name string) (*Map, error) {
	if m, ok := c.Maps[name]; ok {
		return m, nil
	}
	var names []string
	for n := range c.Maps {
		names = append(names, n)
	}
	sort.Strings(names)
	return nil, fmt.Errorf("no map %q in the cloud configuration (maps: %v)", name, names)
}
