package apt

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/brinecm/brine/internal/lazyre"
	"github.com/brinecm/brine/states"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
)

// Type is the `package` resource type: a Debian package, installed, at the latest version or absent, applied in one apt-get run with the other packages of the bundle.
var Type = &states.Type{Name: "package", Labels: 1, Decode: decodePackage}

var (
	// Debian policy 5.6.1 (names) and 5.6.12 (versions), plus an optional :arch.
	pkgNameRE    = lazyre.New(`^[a-z0-9][a-z0-9+.-]{0,127}(:[a-z0-9-]{1,32})?$`)
	pkgVersionRE = lazyre.New(`^[A-Za-z0-9.+~:-]{1,128}$`)
)

type packageConfig struct {
	Name    string `hcl:"name,optional"` // the Debian package name when the label is a role name
	State   string `hcl:"state,optional"`
	Version string `hcl:"version,optional"`
}

// Package is a Debian package managed with apt: installed (any version), at a pinned version,
// at apt's candidate version (latest), or absent. All package changes that are ready together
// go through one apt-get install and one apt-get remove.
type Package struct {
	name    string
	state   string // installed | latest | absent
	version string // pinned version, with state installed

	// What the last Check decided, for the Apply that follows.
	action pkgAction
}

type pkgAction int

const (
	pkgNone pkgAction = iota
	pkgInstall
	pkgRemove
)

func decodePackage(req *states.DecodeRequest) (states.Resource, hcl.Diagnostics) {
	var cfg packageConfig
	diags := gohcl.DecodeBody(req.Body, req.Ctx, &cfg)
	if diags.HasErrors() {
		return nil, diags
	}
	subject := req.AttrRange
	p := &Package{name: req.Name, state: cfg.State, version: cfg.Version}
	nameRange := req.Block.LabelRanges[0].Ptr()
	if cfg.Name != "" {
		// package "proxy" { name = var.proxy_package }: the label names the role, the argument the package.
		p.name, nameRange = cfg.Name, subject("name")
	}
	if p.state == "" {
		p.state = "installed"
	}
	if !pkgNameRE.MatchString(p.name) {
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid package name",
			Detail:  fmt.Sprintf("%q is not a Debian package name: lower-case letters, digits, '+', '-' and '.', starting with a letter or digit, optionally followed by :ARCH.", p.name),
			Subject: nameRange})
	}
	switch p.state {
	case "installed", "latest", "absent":
	default:
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid package state",
			Detail:  fmt.Sprintf("state must be \"installed\", \"latest\" or \"absent\"; got %q.%s", cfg.State, states.DidYouMean(cfg.State, []string{"installed", "latest", "absent"})),
			Subject: subject("state")})
	}
	if p.version != "" {
		switch {
		case !pkgVersionRE.MatchString(p.version):
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid package version",
				Detail: fmt.Sprintf("%q is not a Debian version (letters, digits and . + ~ : - only).", p.version), Subject: subject("version")})
		case p.state != "installed":
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Version with state " + p.state,
				Detail:  fmt.Sprintf("version pins package %s to one version, which contradicts state = %q. Remove version, or use state = \"installed\" (the default) with it.", p.name, p.state),
				Subject: subject("version")})
		}
	}
	if diags.HasErrors() {
		return nil, diags
	}
	return p, diags
}

// BatchKey puts every package resource in one batch.
func (p *Package) BatchKey() string { return "apt" }

// Check compares the dpkg database (read once per run) with the wanted state. apt-cache is asked
// (once per run, about every package of the bundle) only when a candidate version matters: for
// latest, for a pin, and for a package that is to be installed, so that an unknown name fails
// here, alone, instead of sinking the apt-get call of the whole batch.
func (p *Package) Check(ctx context.Context, env *states.Env) (string, error) {
	p.action = pkgNone
	db, err := readDpkg(env)
	if err != nil {
		return "", err
	}
	var installed, presentVer, brokenState string
	for _, e := range db.lookup(p.name) {
		if e.Installed() {
			installed = e.Version
		}
		if e.Present() {
			presentVer = e.Version
			if !e.Installed() {
				brokenState = e.State
			}
		}
	}
	note := func(d string) string {
		switch {
		case installed != "":
			return d + " (installed " + installed + ")"
		case brokenState != "":
			return d + " (dpkg state " + brokenState + ")"
		}
		return d
	}
	if p.state == "absent" {
		if presentVer == "" {
			return "", nil
		}
		p.action = pkgRemove
		return "- " + p.name + " " + presentVer, nil
	}
	if p.state == "installed" && p.version == "" && installed != "" {
		return "", nil
	}
	if p.version != "" && installed == p.version {
		return "", nil
	}
	pol, err := policyFor(ctx, env, p.name)
	if err != nil {
		return "", err
	}
	if pol == nil {
		return "", fmt.Errorf("package %s is unknown to apt: check the name, the apt sources and that `apt-get update` has run", p.name)
	}
	if p.version == "" && pol.Candidate == "" {
		return "", fmt.Errorf("package %s has no installation candidate: apt knows it only as a virtual package or has no version of it; name the package that provides it, or check the apt sources", p.name)
	}
	want := pol.Candidate
	if p.version != "" {
		found := false
		for _, v := range pol.Versions {
			found = found || v == p.version
		}
		if !found {
			return "", fmt.Errorf("version %s of package %s is not available (apt knows %s)", p.version, p.name, strings.Join(pol.Versions, ", "))
		}
		want = p.version
	}
	if installed == want {
		return "", nil
	}
	p.action = pkgInstall
	return note("+ " + p.name + " " + want), nil
}

// inSync re-reads the dpkg database and reports whether p is now as wanted. It keeps p.action
// as it was: the Apply in progress still owns it.
func inSync(ctx context.Context, env *states.Env, p *Package) bool {
	env.Forget(dpkgCacheKey)
	action := p.action
	defer func() { p.action = action }()
	diff, err := p.Check(ctx, env)
	return err == nil && diff == ""
}

// target is how the package is named to apt-get install.
func (p *Package) target() string {
	if p.version != "" {
		return p.name + "=" + p.version
	}
	return p.name
}

// Apply installs or removes this one package.
func (p *Package) Apply(ctx context.Context, env *states.Env) error {
	return p.ApplyBatch(ctx, env, []states.Resource{p})[0]
}

// ApplyBatch removes every package to remove with one apt-get remove, then installs, upgrades and
// pins every package to install with one apt-get install. When a call fails it is repeated per
// package so that the error lands on the package that caused it and the others still apply.
func (p *Package) ApplyBatch(ctx context.Context, env *states.Env, batch []states.Resource) []error {
	errs := make([]error, len(batch))
	var installs, removes []int
	for i, r := range batch {
		switch r.(*Package).action {
		case pkgInstall:
			installs = append(installs, i)
		case pkgRemove:
			removes = append(removes, i)
		}
	}
	defer env.Forget(dpkgCacheKey)
	run := func(idx []int, sub string) {
		if len(idx) == 0 {
			return
		}
		argsFor := func(idx []int) ([]string, []string) {
			args := []string{sub}
			var targets []string
			pinned := false
			for _, i := range idx {
				q := batch[i].(*Package)
				pinned = pinned || q.version != ""
				if sub == "remove" {
					targets = append(targets, q.name)
				} else {
					targets = append(targets, q.target())
				}
			}
			if pinned {
				args = append(args, "--allow-downgrades")
			}
			return args, targets
		}
		args, targets := argsFor(idx)
		err := aptGet(ctx, args, targets)
		if err == nil {
			return
		}
		if errors.Is(err, errDpkgLocked) || ctx.Err() != nil {
			for _, i := range idx {
				errs[i] = err
			}
			return
		}
		// Some of the batch may have applied before apt-get failed: keep those, and find out
		// which packages are still wrong. One left is the culprit; several are retried one by
		// one so that each gets its own error. A package that is as wanted has succeeded even
		// if apt-get failed over another one (say a broken package left half-configured by an
		// earlier run, which apt-get tries to configure again on every call).
		var failing []int
		for _, i := range idx {
			if !inSync(ctx, env, batch[i].(*Package)) {
				failing = append(failing, i)
			}
		}
		if len(failing) == 1 {
			errs[failing[0]] = err
			return
		}
		for _, i := range failing {
			args, targets := argsFor([]int{i})
			if e := aptGet(ctx, args, targets); e != nil && !inSync(ctx, env, batch[i].(*Package)) {
				errs[i] = e
			}
		}
	}
	run(removes, "remove")
	run(installs, "install")
	return errs
}
