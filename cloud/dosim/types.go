package dosim

// The JSON shapes below follow the DigitalOcean API v2 reference
// (https://docs.digitalocean.com/reference/api/api-reference/). They are our own structs, not
// godo's, so that a disagreement between godo and the API shows up in the tests instead of being
// copied into the simulator.

// Droplet is a droplet as the API returns it.
type Droplet struct {
	ID        int       `json:"id"`
	Name      string    `json:"name"`
	Memory    int       `json:"memory"`
	Vcpus     int       `json:"vcpus"`
	Disk      int       `json:"disk"`
	Locked    bool      `json:"locked"`
	Status    string    `json:"status"` // new, active, off, archive
	Kernel    *struct{} `json:"kernel"`
	CreatedAt string    `json:"created_at"`
	Features  []string  `json:"features"`
	BackupIDs []int     `json:"backup_ids"`
	// NextBackupWindow is always null: backups are not simulated.
	NextBackupWindow *struct{} `json:"next_backup_window"`
	SnapshotIDs      []int     `json:"snapshot_ids"`
	Image            Image     `json:"image"`
	VolumeIDs        []string  `json:"volume_ids"`
	Size             Size      `json:"size"`
	SizeSlug         string    `json:"size_slug"`
	Networks         Networks  `json:"networks"`
	Region           Region    `json:"region"`
	Tags             []string  `json:"tags"`
	VPCUUID          string    `json:"vpc_uuid,omitempty"`
}

// Networks holds a droplet's addresses; both lists are empty while the droplet is "new".
type Networks struct {
	V4 []NetworkV4 `json:"v4"`
	V6 []NetworkV6 `json:"v6"`
}

// NetworkV4 is one IPv4 address of a droplet; Type is "public" or "private".
type NetworkV4 struct {
	IPAddress string `json:"ip_address"`
	Netmask   string `json:"netmask"`
	Gateway   string `json:"gateway"`
	Type      string `json:"type"`
}

// NetworkV6 is one IPv6 address of a droplet.
type NetworkV6 struct {
	IPAddress string `json:"ip_address"`
	Netmask   int    `json:"netmask"`
	Gateway   string `json:"gateway"`
	Type      string `json:"type"`
}

// Region is a datacenter region.
type Region struct {
	Slug      string   `json:"slug"`
	Name      string   `json:"name"`
	Sizes     []string `json:"sizes"`
	Available bool     `json:"available"`
	Features  []string `json:"features"`
}

// Size is a droplet size.
type Size struct {
	Slug         string   `json:"slug"`
	Memory       int      `json:"memory"`
	Vcpus        int      `json:"vcpus"`
	Disk         int      `json:"disk"`
	Transfer     float64  `json:"transfer"`
	PriceMonthly float64  `json:"price_monthly"`
	PriceHourly  float64  `json:"price_hourly"`
	Regions      []string `json:"regions"`
	Available    bool     `json:"available"`
	Description  string   `json:"description"`
}

// Image is a distribution image.
type Image struct {
	ID            int      `json:"id"`
	Name          string   `json:"name"`
	Distribution  string   `json:"distribution"`
	Slug          *string  `json:"slug"` // null for custom images and snapshots
	Public        bool     `json:"public"`
	Regions       []string `json:"regions"`
	CreatedAt     string   `json:"created_at"`
	MinDiskSize   int      `json:"min_disk_size"`
	Type          string   `json:"type"`
	SizeGigabytes float64  `json:"size_gigabytes"`
	Description   string   `json:"description"`
	Status        string   `json:"status"`
}

// Action is an asynchronous operation on a resource.
type Action struct {
	ID           int     `json:"id"`
	Status       string  `json:"status"` // in-progress, completed, errored
	Type         string  `json:"type"`
	StartedAt    string  `json:"started_at"`
	CompletedAt  *string `json:"completed_at"`
	ResourceID   int     `json:"resource_id"`
	ResourceType string  `json:"resource_type"`
	Region       *Region `json:"region"`
	RegionSlug   string  `json:"region_slug"`
}

// Key is an SSH key of the account.
type Key struct {
	ID          int    `json:"id"`
	Fingerprint string `json:"fingerprint"`
	PublicKey   string `json:"public_key"`
	Name        string `json:"name"`
}

// Domain is a DNS zone managed by DigitalOcean.
type Domain struct {
	Name     string `json:"name"`
	TTL      int    `json:"ttl"`
	ZoneFile string `json:"zone_file"`
}

// Record is one DNS record of a domain. Name is relative to the domain ("@" for the apex).
type Record struct {
	ID       int     `json:"id"`
	Type     string  `json:"type"`
	Name     string  `json:"name"`
	Data     string  `json:"data"`
	Priority *int    `json:"priority"`
	Port     *int    `json:"port"`
	TTL      int     `json:"ttl"`
	Weight   *int    `json:"weight"`
	Flags    *int    `json:"flags"`
	Tag      *string `json:"tag"`
}

type links struct {
	Pages   *pages       `json:"pages,omitempty"`
	Actions []linkAction `json:"actions,omitempty"`
}

type pages struct {
	First string `json:"first,omitempty"`
	Prev  string `json:"prev,omitempty"`
	Next  string `json:"next,omitempty"`
	Last  string `json:"last,omitempty"`
}

type linkAction struct {
	ID   int    `json:"id"`
	Rel  string `json:"rel"`
	Href string `json:"href"`
}

type meta struct {
	Total int `json:"total"`
}

// apiError is DigitalOcean's error body.
type apiError struct {
	ID        string `json:"id"`
	Message   string `json:"message"`
	RequestID string `json:"request_id,omitempty"`
}
