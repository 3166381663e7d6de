package minion

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"

	"github.com/brinecm/brine/internal/hclfile"
	"github.com/brinecm/brine/pki"
)

// Config is a minion's configuration (minion.hcl). Every field but master has a default:
//
//	master        = "10.0.0.1"                # host of the master; ports below; or a list of
//	                                          # masters sharing one store: ["m1", "m2:5506"]
//	publish_port  = 4505
//	request_port  = 4506
//	id            = "<hostname>"              # ^[a-z0-9][a-z0-9.-]{0,62}$
//	data_dir      = "/var/lib/brine/minion"   # keys, pinned master key, seen.log, outbox.log
//	master_finger = ""                        # pin the master's key; empty = the token's, else trust on first use
//	groups        = []                        # groups to ask for (the operator grants them)
//	token         = ""                        # enrolment token: accepted without the operator; pins the master
//	facts         = {}                        # extra facts, strings
//	heartbeat     = "5s"
//	max_backoff   = "30s"                     # reconnect backoff cap (with jitter)
type Config struct {
	// Master is the master's host (or host:request-port); Masters, when not empty, lists the
	// masters of one fleet (masters sharing one store), tried in a random order. minion.hcl's
	// master takes a string or a list of strings.
	Master  string
	Masters []string
	// MasterHCL is minion.hcl's master as written (a string or a list); LoadConfig turns it
	// into Master or Masters.
	MasterHCL    cty.Value         `hcl:"master,optional"`
	PublishPort  int               `hcl:"publish_port,optional"`
	RequestPort  int               `hcl:"request_port,optional"`
	ID           string            `hcl:"id,optional"`
	DataDir      string            `hcl:"data_dir,optional"`
	MasterFinger string            `hcl:"master_finger,optional"`
	Groups       []string          `hcl:"groups,optional"`
	Token        string            `hcl:"token,optional"`
	ExtraFacts   map[string]string `hcl:"facts,optional"`
	Heartbeat    string            `hcl:"heartbeat,optional"`
	MaxBackoff   string            `hcl:"max_backoff,optional"`

	// FactsFunc, when set, replaces states.Facts (tests and the swarm benchmark, where thousands
	// of minions share one host).
	FactsFunc func() map[string]any

	// ExecSlots, when set, is shared by the minions of one process (the swarm benchmark): an
	// apply or a run command runs only while it holds a slot. Thousands of minions applying
	// at once on a few cores would otherwise queue their own connection goroutines behind
	// thousands of CPU-bound applies, for longer than the heartbeat timeouts; and thousands
	// of commands forked at once from one process hold pipes each until they exit, beyond the
	// process's file descriptors (which its minions' connections already take most of).
	ExecSlots chan struct{}

	// ApplyGCPercent, when above 0, is the process's GOGC from the minion's first apply on
	// (debug.SetGCPercent), unless GOGC is set in the environment: for a process that runs
	// this minion alone, as brine-minion does (internal/minioncli says why it sets 50). At the
	// first apply and not at start, so that a minion that has run no job has not collected yet
	// (a first collection brings the collector's own buffers, 0.7 MB). Ignored with ExecSlots.
	ApplyGCPercent int

	heartbeat, maxBackoff time.Duration
	pubAddr, reqAddr      string       // of the first master
	masters               []masterAddr // all of them, in the config's order
}

// masterAddr is where one master listens.
type masterAddr struct{ pub, req string }

// maxMasters bounds the masters one minion config lists.
const maxMasters = 16

// masterList reads minion.hcl's master: a string or a list of strings.
func masterList(v cty.Value) ([]string, error) {
	if v == cty.NilVal || v.IsNull() {
		return nil, nil
	}
	if !v.IsKnown() {
		return nil, fmt.Errorf("master must be a string or a list of strings")
	}
	ty := v.Type()
	switch {
	case ty == cty.String:
		return []string{v.AsString()}, nil
	case ty.IsListType() || ty.IsTupleType() || ty.IsSetType():
		var out []string
		for it := v.ElementIterator(); it.Next(); {
			_, e := it.Element()
			if e.IsNull() || !e.IsKnown() || e.Type() != cty.String {
				return nil, fmt.Errorf("master must be a string or a list of strings")
			}
			out = append(out, e.AsString())
		}
		return out, nil
	}
	return nil, fmt.Errorf("master must be a string or a list of strings")
}

// DefaultDataDir is where a minion keeps its state when nothing says otherwise.
const DefaultDataDir = "/var/lib/brine/minion"

// LoadConfig reads a minion.hcl (empty path: defaults) and applies the flag overrides.
func LoadConfig(path, masterAddr, id, dataDir string) (Config, hcl.Diagnostics) {
	var c Config
	if path != "" {
		if diags := hclfile.Decode(path, "minion config", &c); diags.HasErrors() {
			return c, diags
		}
	}
	list, err := masterList(c.MasterHCL)
	if err != nil {
		return c, hclfile.Diagnose(path, "Invalid minion config", hclfile.Field(err, "master"))
	}
	if len(list) == 1 {
		c.Master = list[0]
	} else {
		c.Masters = list
	}
	if masterAddr != "" {
		// --master takes one master or several separated by commas.
		c.Master, c.Masters = "", strings.Split(masterAddr, ",")
		if len(c.Masters) == 1 {
			c.Master, c.Masters = c.Masters[0], nil
		}
	}
	if id != "" {
		c.ID = id
	}
	if dataDir != "" {
		c.DataDir = dataDir
	}
	if err := c.Fill(); err != nil {
		return c, hclfile.Diagnose(path, "Invalid minion config", err)
	}
	return c, nil
}

// Fill sets defaults, parses durations and checks the id.
func (c *Config) Fill() error {
	names := c.Masters
	if len(names) == 0 && c.Master != "" {
		names = []string{c.Master}
	}
	if len(names) == 0 {
		return fmt.Errorf("no master: set master in minion.hcl or pass --master")
	}
	if len(names) > maxMasters {
		return hclfile.Field(fmt.Errorf("master lists %d masters; at most %d", len(names), maxMasters), "master")
	}
	if c.PublishPort == 0 {
		c.PublishPort = 4505
	}
	if c.RequestPort == 0 {
		c.RequestPort = 4506
	}
	c.masters = nil
	for _, name := range names {
		name = strings.TrimSpace(name)
		if name == "" {
			return hclfile.Field(errors.New("master lists an empty name"), "master")
		}
		host, pubPort, reqPort := name, c.PublishPort, c.RequestPort
		if h, p, err := net.SplitHostPort(name); err == nil {
			// "host:port" names the request port; the publish port is the one below it, as 4505/4506.
			host = h
			var port int
			fmt.Sscan(p, &port)
			if port > 1 {
				reqPort, pubPort = port, port-1
			}
		}
		c.masters = append(c.masters, masterAddr{
			pub: net.JoinHostPort(host, fmt.Sprint(pubPort)), req: net.JoinHostPort(host, fmt.Sprint(reqPort)),
		})
	}
	c.pubAddr, c.reqAddr = c.masters[0].pub, c.masters[0].req
	if c.ID == "" {
		h, _ := os.Hostname()
		c.ID = strings.ToLower(h)
	}
	if !pki.ValidID(c.ID) {
		return hclfile.Field(fmt.Errorf("minion id %q is not valid: use lower-case letters, digits, dots and dashes, at most 63 characters", c.ID), "id")
	}
	if c.Token != "" {
		// A brn2 token carries the master's fingerprint: the minion pins the master from its
		// first connection instead of trusting it on first use.
		f, err := pki.TokenMasterFinger(c.Token)
		if err != nil {
			return hclfile.Field(err, "token")
		}
		switch {
		case f == "":
		case c.MasterFinger == "":
			c.MasterFinger = f
		case pki.NormalizeFingerprint(c.MasterFinger) != pki.NormalizeFingerprint(f):
			return hclfile.Field(fmt.Errorf("master_finger %s differs from the master fingerprint in the enrolment token (%s): the token was made by another master", c.MasterFinger, f), "master_finger")
		}
	}
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	abs, err := filepath.Abs(c.DataDir)
	if err != nil {
		return err
	}
	c.DataDir = abs
	for _, d := range []struct {
		name string
		s    *string
		def  string
		out  *time.Duration
	}{{"heartbeat", &c.Heartbeat, "5s", &c.heartbeat}, {"max_backoff", &c.MaxBackoff, "30s", &c.maxBackoff}} {
		if *d.s == "" {
			*d.s = d.def
		}
		v, err := time.ParseDuration(*d.s)
		if err != nil || v <= 0 {
			return hclfile.Field(fmt.Errorf("%s: bad duration %q (want e.g. %q)", d.name, *d.s, d.def), d.name)
		}
		*d.out = v
	}
	return nil
}

// SetAddrs points the minion at explicit publish and request addresses (tests, port 0).
func (c *Config) SetAddrs(pub, req string) {
	c.pubAddr, c.reqAddr = pub, req
	c.masters = []masterAddr{{pub: pub, req: req}}
}

// AddAddrs adds a master at explicit publish and request addresses (tests of failover).
func (c *Config) AddAddrs(pub, req string) {
	c.masters = append(c.masters, masterAddr{pub: pub, req: req})
}
