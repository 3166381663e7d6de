package file

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/brinecm/brine/internal/atomicfile"
	"github.com/brinecm/brine/internal/safepath"
	"github.com/brinecm/brine/states"
	"github.com/brinecm/brine/states/resources/internal/textdiff"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
	"golang.org/x/sys/unix"
)

// Type is the `file` resource type: a file (content, source or template), a directory or an absent path, with its mode and owner.
var Type = &states.Type{Name: "file", Labels: 1, HidesSensitive: true, Decode: decodeFile}

type fileConfig struct {
	Path     string     `hcl:"path,optional"`
	State    string     `hcl:"state,optional"`
	Content  *string    `hcl:"content,optional"`
	Source   *string    `hcl:"source,optional"`
	Template *string    `hcl:"template,optional"`
	Vars     *cty.Value `hcl:"vars,optional"`
	Mode     string     `hcl:"mode,optional"`
	Owner    string     `hcl:"owner,optional"`
	Group    string     `hcl:"group,optional"`
	Recurse  bool       `hcl:"recurse,optional"`
}

// fileRes manages a regular file, a directory (optionally a whole tree from the bundle), or the
// absence of either.
type fileRes struct {
	path    string
	state   string            // file | directory | absent
	content []byte            // wanted content of a regular file; nil = leave content alone
	tree    map[string][]byte // directory with recurse from a bundle directory: relative path -> content
	mode    os.FileMode
	hasMode bool
	uid     int // -1 = leave alone
	gid     int
	recurse bool
	owner   string
	group   string
	// sensitive: the content comes from secret() or a sensitive variable; diffs do not show it.
	sensitive bool

	plan []fileOp // what Check found to do, for Apply
}

type fileOp struct {
	path    string
	content []byte // write this content (nil = no content change)
	mkdir   bool
	remove  bool
	chmod   bool
	mode    os.FileMode
	chown   bool
	sweep   bool // remove the temporary files an interrupted apply left beside path
}

func decodeFile(req *states.DecodeRequest) (states.Resource, hcl.Diagnostics) {
	var cfg fileConfig
	diags := gohcl.DecodeBody(req.Body, req.Ctx, &cfg)
	if diags.HasErrors() {
		return nil, diags
	}
	attrRange := req.AttrRange
	bad := func(field, detail string) hcl.Diagnostics {
		return hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Invalid file " + field, Detail: detail, Subject: attrRange(field)}}
	}
	r := &fileRes{path: req.Name, state: cfg.State, uid: -1, gid: -1, recurse: cfg.Recurse, owner: cfg.Owner, group: cfg.Group}
	pathRange := req.Block.LabelRanges[0].Ptr()
	if cfg.Path != "" {
		// path lets the label be a short name and the path an expression: file "motd" { path = "${var.root}/etc/motd" }
		r.path, pathRange = cfg.Path, attrRange("path")
	}
	if !filepath.IsAbs(r.path) || filepath.Clean(r.path) != r.path {
		return nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Invalid file path",
			Detail: fmt.Sprintf("%q must be an absolute, clean path like /etc/motd (set path = \"...\" when the label is a name).", r.path), Subject: pathRange}}
	}
	if r.state == "" {
		r.state = "file"
	}
	switch r.state {
	case "file", "directory", "absent":
	default:
		return nil, bad("state", fmt.Sprintf("state is %q; it must be \"file\", \"directory\" or \"absent\".", r.state))
	}
	n := 0
	for _, p := range []*string{cfg.Content, cfg.Source, cfg.Template} {
		if p != nil {
			n++
		}
	}
	if n > 1 {
		return nil, bad("content", "Set at most one of content, source and template.")
	}
	if cfg.Vars != nil && cfg.Template == nil {
		return nil, bad("vars", "vars are for template; set template = \"path/in/bundle.tmpl\" too.")
	}
	switch {
	case cfg.Content != nil:
		r.content = []byte(*cfg.Content)
	case cfg.Source != nil && r.state == "directory":
		prefix := strings.TrimSuffix(path.Clean(*cfg.Source), "/") + "/"
		if strings.HasPrefix(*cfg.Source, "/") || strings.HasPrefix(path.Clean(*cfg.Source), "..") {
			return nil, bad("source", fmt.Sprintf("%q escapes the bundle root; sources are paths inside the bundle.", *cfg.Source))
		}
		r.tree = map[string][]byte{}
		for name, data := range req.Bundle.Files {
			if strings.HasPrefix(name, prefix) {
				r.tree[strings.TrimPrefix(name, prefix)] = data
			}
		}
		if len(r.tree) == 0 {
			return nil, bad("source", fmt.Sprintf("No files under %q in the bundle.", *cfg.Source))
		}
	case cfg.Source != nil:
		key, err := req.Bundle.Path(*cfg.Source)
		if err != nil {
			return nil, bad("source", err.Error()+".")
		}
		r.content = req.Bundle.Files[key]
	case cfg.Template != nil:
		vars := cty.EmptyObjectVal
		if cfg.Vars != nil {
			vars = *cfg.Vars
		}
		fns := map[string]function.Function{}
		for k, f := range req.Ctx.Parent().Functions {
			if k != "templatefile" { // no recursion through templates
				fns[k] = f
			}
		}
		v, err := states.RenderTemplate(req.Bundle, *cfg.Template, vars, fns)
		if err != nil {
			return nil, bad("template", err.Error()+".")
		}
		if v.IsMarked() { // the template called secret()
			v, _ = v.Unmark()
			req.NoteSensitive("template", v)
		}
		r.content = []byte(v.AsString())
	}
	for _, a := range []string{"content", "source", "template", "vars"} {
		r.sensitive = r.sensitive || req.Sensitive(a)
	}
	if r.content != nil && r.state != "file" {
		return nil, bad("content", fmt.Sprintf("A file with state = %q has no content.", r.state))
	}
	if cfg.Mode != "" {
		m, err := strconv.ParseUint(cfg.Mode, 8, 32)
		if err != nil || m > 0o7777 {
			return nil, bad("mode", fmt.Sprintf("mode is %q; write it as an octal string like \"0644\".", cfg.Mode))
		}
		r.mode, r.hasMode = os.FileMode(m), true
	}
	if cfg.Owner != "" {
		u, err := lookupID(cfg.Owner, true)
		if err != nil {
			return nil, bad("owner", err.Error())
		}
		r.uid = u
	}
	if cfg.Group != "" {
		g, err := lookupID(cfg.Group, false)
		if err != nil {
			return nil, bad("group", err.Error())
		}
		r.gid = g
	}
	return r, diags
}

// lookupID resolves a user or group name (or a numeric id) on this host.
func lookupID(name string, isUser bool) (int, error) {
	if n, err := strconv.Atoi(name); err == nil && n >= 0 {
		return n, nil
	}
	if isUser {
		u, err := user.Lookup(name)
		if err != nil {
			return 0, fmt.Errorf("no user %q on this host", name)
		}
		return strconv.Atoi(u.Uid)
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, fmt.Errorf("no group %q on this host", name)
	}
	return strconv.Atoi(g.Gid)
}

func (r *fileRes) Check(ctx context.Context, env *states.Env) (string, error) {
	r.plan = nil
	var diff []string
	st, err := lstat(r.path)
	exists := err == nil
	if err != nil && !os.IsNotExist(err) {
		return "", err
	}
	switch r.state {
	case "absent":
		if exists {
			r.plan = append(r.plan, fileOp{path: r.path, remove: true})
			kind := "file"
			if st.IsDir() {
				kind = "directory"
			}
			diff = append(diff, fmt.Sprintf("- remove %s %s", kind, r.path))
		}
	case "file":
		if exists && st.IsDir() {
			return "", fmt.Errorf("%s is a directory; set state = \"directory\" or remove it first", r.path)
		}
		d, err := r.checkFile(env, r.path, st, exists, r.content, 0o644)
		if err != nil {
			return "", err
		}
		diff = append(diff, d...)
	case "directory":
		if exists && !st.IsDir() {
			return "", fmt.Errorf("%s exists and is not a directory", r.path)
		}
		d := r.checkDir(r.path, st, exists)
		diff = append(diff, d...)
		if r.tree != nil {
			names := make([]string, 0, len(r.tree))
			for n := range r.tree {
				names = append(names, n)
			}
			sort.Strings(names)
			for _, n := range names {
				p := filepath.Join(r.path, filepath.FromSlash(n))
				for dir := filepath.Dir(p); dir != r.path; dir = filepath.Dir(dir) {
					if dst, err := lstat(dir); err != nil || !dst.IsDir() {
						d := r.checkDir(dir, dst, err == nil)
						diff = append(diff, d...)
					}
				}
				fst, err := lstat(p)
				if err != nil && !os.IsNotExist(err) {
					return "", err
				}
				var fmode os.FileMode = 0o644
				d, err := r.checkFile(env, p, fst, err == nil, r.tree[n], fmode)
				if err != nil {
					return "", err
				}
				diff = append(diff, d...)
			}
		} else if r.recurse && exists && (r.uid >= 0 || r.gid >= 0) {
			err := filepath.WalkDir(r.path, func(p string, de fs.DirEntry, err error) error {
				if err != nil || p == r.path {
					return err
				}
				info, err := de.Info()
				if err != nil {
					return err
				}
				if r.ownerDiffers(info) {
					r.plan = append(r.plan, fileOp{path: p, chown: true})
					diff = append(diff, fmt.Sprintf("~ owner of %s -> %s", p, r.ownerString()))
				}
				return nil
			})
			if err != nil {
				return "", err
			}
		}
	}
	return strings.Join(dedupe(diff), "\n"), nil
}

func dedupe(lines []string) []string {
	seen := map[string]bool{}
	out := lines[:0]
	for _, l := range lines {
		if !seen[l] {
			seen[l] = true
			out = append(out, l)
		}
	}
	return out
}

func (r *fileRes) checkDir(p string, st os.FileInfo, exists bool) []string {
	mode := r.mode
	if !r.hasMode {
		mode = 0o755
	}
	if !exists {
		for _, op := range r.plan {
			if op.path == p && op.mkdir {
				return nil
			}
		}
		r.plan = append(r.plan, fileOp{path: p, mkdir: true, mode: mode, chown: r.uid >= 0 || r.gid >= 0})
		return []string{fmt.Sprintf("+ directory %s (mode %04o)", p, mode)}
	}
	var diff []string
	op := fileOp{path: p}
	if r.hasMode && st.Mode().Perm()|st.Mode()&(os.ModeSetuid|os.ModeSetgid|os.ModeSticky) != fileModeBits(r.mode) {
		op.chmod, op.mode = true, r.mode
		diff = append(diff, fmt.Sprintf("~ mode of %s %04o -> %04o", p, permBits(st.Mode()), r.mode))
	}
	if r.ownerDiffers(st) {
		op.chown = true
		diff = append(diff, fmt.Sprintf("~ owner of %s -> %s", p, r.ownerString()))
	}
	if op.chmod || op.chown {
		r.plan = append(r.plan, op)
	}
	return diff
}

func (r *fileRes) checkFile(env *states.Env, p string, st os.FileInfo, exists bool, want []byte, mode os.FileMode) ([]string, error) {
	if r.hasMode {
		mode = r.mode
	}
	// An apply killed between writing a new content and renaming it over p leaves its temporary
	// file beside p. They are garbage, not state: one that cannot be read is left alone.
	var sweep []string
	if stale := staleBeside(env, p); len(stale) > 0 {
		r.plan = append(r.plan, fileOp{path: p, sweep: true})
		for _, t := range stale {
			sweep = append(sweep, fmt.Sprintf("- %s (the temporary file of an interrupted apply)", t))
		}
	}
	diff, err := r.checkFileContent(p, st, exists, want, mode)
	return append(sweep, diff...), err
}

// staleBeside returns the stale temporary files beside p (atomicfile.Stale). A directory found
// without any temporary file is not listed again in the same run (env): the sweep is for what
// applies killed before this run left, and this run's own temporary files are renamed or
// removed before its re-checks. Without it each file's check read its whole directory: 20
// files in one directory, 40 listings of 20 entries per apply (9% of a minion's CPU applying 20
// unchanged files).
func staleBeside(env *states.Env, p string) []string {
	dir := filepath.Dir(p)
	if env != nil {
		none, _ := env.Cached("file: no temporary files in "+dir, func() (any, error) {
			has, err := atomicfile.HasTemp(dir)
			if err != nil || has {
				return nil, errHasTemp // not cached: listed again for each file
			}
			return true, nil
		})
		if none == true {
			return nil
		}
	}
	stale, _ := atomicfile.Stale(p)
	return stale
}

var errHasTemp = errors.New("the directory holds temporary files")

func (r *fileRes) checkFileContent(p string, st os.FileInfo, exists bool, want []byte, mode os.FileMode) ([]string, error) {
	if !exists {
		content := want
		if content == nil {
			content = []byte{}
		}
		r.plan = append(r.plan, fileOp{path: p, content: content, mode: mode, chmod: true, chown: r.uid >= 0 || r.gid >= 0})
		return []string{fmt.Sprintf("+ file %s (mode %04o)", p, mode), r.contentDiff(p, nil, content)}, nil
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s exists and is not a regular file", p)
	}
	var diff []string
	op := fileOp{path: p, mode: mode}
	if want != nil {
		have, more, err := readExisting(p, max(int64(len(want))+1, readLimit))
		if err != nil {
			return nil, err
		}
		if more || !bytes.Equal(have, want) {
			op.content = want
			op.chmod = true
			d := r.contentDiff(p, have, want)
			if more {
				d += fmt.Sprintf("\n(%s holds more than the %d bytes read; the diff shows those)", p, len(have))
			}
			diff = append(diff, d)
		}
	}
	if (r.hasMode || r.tree != nil && r.hasMode) && fileModeBits(st.Mode()) != fileModeBits(mode) {
		op.chmod = true
		diff = append(diff, fmt.Sprintf("~ mode of %s %04o -> %04o", p, permBits(st.Mode()), mode))
	}
	if r.ownerDiffers(st) {
		op.chown = true
		diff = append(diff, fmt.Sprintf("~ owner of %s -> %s", p, r.ownerString()))
	}
	if op.content != nil || op.chmod || op.chown {
		if op.content == nil && !r.hasMode {
			op.chmod = false
		}
		r.plan = append(r.plan, op)
	}
	return diff, nil
}

// readLimit is how much of an existing file a check reads at least: all of it when it is no
// longer than the wanted content, which is enough to know that it differs.
const readLimit = 1 << 20

// lstat is os.Lstat with p's directory reached through safepath: a symbolic link a user could
// have placed on the way is an error, not followed.
func lstat(p string) (os.FileInfo, error) {
	d, name, err := safepath.OpenParent(p, false)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	fd, err := unix.Openat(d.Fd(), name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "lstat", Path: p, Err: err}
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	return f.Stat()
}

// readExisting reads at most limit bytes of the regular file p; more reports that it holds
// more. A user who can write p's directory may have put anything there since the check's
// lstat: a FIFO or a device (opened without blocking, then refused), a link (not followed), an
// endless or huge file (read no further than limit).
func readExisting(p string, limit int64) (data []byte, more bool, err error) {
	d, name, err := safepath.OpenParent(p, false)
	if err != nil {
		return nil, false, err
	}
	defer d.Close()
	fd, err := unix.Openat(d.Fd(), name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ELOOP) {
		return nil, false, fmt.Errorf("%s exists and is not a regular file", p)
	}
	if err != nil {
		return nil, false, &fs.PathError{Op: "open", Path: p, Err: err}
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, false, err
	}
	if !st.Mode().IsRegular() {
		return nil, false, fmt.Errorf("%s exists and is not a regular file", p)
	}
	data, err = io.ReadAll(io.LimitReader(f, limit))
	if err != nil {
		return nil, false, err
	}
	return data, int64(len(data)) == limit || st.Size() > int64(len(data)), nil
}

func permBits(m os.FileMode) os.FileMode { return fileModeBits(m) }

// fileModeBits returns permission plus setuid/setgid/sticky bits in chmod's octal layout.
func fileModeBits(m os.FileMode) os.FileMode {
	out := m.Perm()
	if m&os.ModeSetuid != 0 {
		out |= 0o4000
	}
	if m&os.ModeSetgid != 0 {
		out |= 0o2000
	}
	if m&os.ModeSticky != 0 {
		out |= 0o1000
	}
	return out
}

func goMode(m os.FileMode) os.FileMode {
	out := m.Perm()
	if m&0o4000 != 0 {
		out |= os.ModeSetuid
	}
	if m&0o2000 != 0 {
		out |= os.ModeSetgid
	}
	if m&0o1000 != 0 {
		out |= os.ModeSticky
	}
	return out
}

func (r *fileRes) ownerDiffers(st os.FileInfo) bool {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return false
	}
	return (r.uid >= 0 && int(sys.Uid) != r.uid) || (r.gid >= 0 && int(sys.Gid) != r.gid)
}

func (r *fileRes) ownerString() string {
	o, g := r.owner, r.group
	if o == "" {
		o = "(unchanged)"
	}
	if g == "" {
		return o
	}
	return o + ":" + g
}

// contentDiff is textdiff.Content, or one line without the content when it is sensitive
// (neither the new content nor the old one, which may hold the previous secret, nor a digest of
// either).
func (r *fileRes) contentDiff(p string, have, want []byte) string {
	if r.sensitive {
		return fmt.Sprintf("~ content of %s: (sensitive content)", p)
	}
	return textdiff.Content(p, have, want)
}

func (r *fileRes) Apply(ctx context.Context, env *states.Env) error {
	return applyAll(ctx, []*fileRes{r})[0]
}

// BatchKey puts every file resource that is ready at the same time in one batch: their new
// contents are committed together (see applyAll).
func (r *fileRes) BatchKey() string { return "file" }

// ApplyBatch applies the plans of batch (file resources, r among them) with one group commit.
func (r *fileRes) ApplyBatch(ctx context.Context, env *states.Env, batch []states.Resource) []error {
	rs := make([]*fileRes, len(batch))
	for i, b := range batch {
		rs[i] = b.(*fileRes)
	}
	return applyAll(ctx, rs)
}

// applyAll carries out the plans of rs in order. Directories, modes, owners and removals happen
// at once; new contents are staged (written to temporary files) and committed together at the
// end: synced in parallel, renamed, and each directory synced once, instead of two fsyncs per
// file. Staged files are committed first when a later operation would touch them (a removal, a
// chmod of the same path), so the result is the one of applying the plans one by one. When it
// returns, every content it reports as written is in place and durable.
func applyAll(ctx context.Context, rs []*fileRes) []error {
	errs := make([]error, len(rs))
	var b atomicfile.Batch
	var owner []int // the resource of each staged file
	commit := func() {
		for j, err := range b.Commit() {
			if err != nil && errs[owner[j]] == nil {
				errs[owner[j]] = err
			}
		}
		owner = owner[:0]
	}
	for i, r := range rs {
		for _, op := range r.plan {
			if err := ctx.Err(); err != nil {
				errs[i] = err
				break
			}
			if op.content != nil {
				if err := b.Stage(op.path, op.content, goMode(op.mode), r.uid, r.gid); err != nil {
					errs[i] = err
					break
				}
				owner = append(owner, i)
				continue
			}
			if b.Len() > 0 && (op.remove || b.Pending(op.path)) {
				commit()
			}
			if err := r.applyOp(op); err != nil {
				errs[i] = err
				break
			}
		}
	}
	commit()
	return errs
}

func (r *fileRes) applyOp(op fileOp) error {
	if op.sweep {
		return atomicfile.RemoveStale(op.path)
	}
	// Every change is made relative to op.path's directory, reached through safepath: a user
	// who can write a directory on the path cannot redirect it with a symbolic link.
	d, name, err := safepath.OpenParent(op.path, op.mkdir)
	if op.remove && errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer d.Close()
	switch {
	case op.remove:
		return removeAt(d, name)
	case op.mkdir:
		if err := unix.Mkdirat(d.Fd(), name, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
			return &fs.PathError{Op: "mkdir", Path: op.path, Err: err}
		}
		return r.setAttrs(d, name, op.path, true, op.mode, op.chown)
	}
	return r.setAttrs(d, name, op.path, op.chmod, op.mode, op.chown)
}

// setAttrs sets the mode (chmod, octal layout) and the owner (chown, r's) of name in d. It
// opens name without following a link and changes that very file: a user who swapped it for a
// link to another file since the check makes it fail (chmod), or changes the link's owner
// (chown, as lchown would), never the other file's.
func (r *fileRes) setAttrs(d *safepath.Dir, name, p string, chmod bool, mode os.FileMode, chown bool) error {
	if !chmod && !chown {
		return nil
	}
	fd, err := unix.Openat(d.Fd(), name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return &fs.PathError{Op: "open", Path: p, Err: err}
	}
	defer unix.Close(fd)
	if chmod {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return &fs.PathError{Op: "stat", Path: p, Err: err}
		}
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			return fmt.Errorf("%s became a symbolic link after the check; its mode is left alone", p)
		}
		// An O_PATH descriptor takes no fchmod; its /proc/self/fd link names that very inode.
		if err := unix.Fchmodat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), uint32(mode), 0); err != nil {
			return &fs.PathError{Op: "chmod", Path: p, Err: err}
		}
	}
	if chown {
		if err := unix.Fchownat(fd, "", r.uid, r.gid, unix.AT_EMPTY_PATH); err != nil {
			return &fs.PathError{Op: "chown", Path: p, Err: err}
		}
	}
	return nil
}

// removeAt removes name from d, and everything below it when it is a directory, without
// following a link: each directory is opened with O_NOFOLLOW inside the one before.
func removeAt(d *safepath.Dir, name string) error {
	return removeTree(d.Fd(), name, d.Join(name))
}

func removeTree(dirfd int, name, p string) error {
	err := unix.Unlinkat(dirfd, name, 0)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EPERM) {
		return &fs.PathError{Op: "remove", Path: p, Err: err}
	}
	fd, oerr := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if oerr != nil {
		return &fs.PathError{Op: "remove", Path: p, Err: err}
	}
	dir := os.NewFile(uintptr(fd), p)
	defer dir.Close()
	names, err := dir.Readdirnames(-1)
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := removeTree(fd, n, filepath.Join(p, n)); err != nil {
			return err
		}
	}
	if err := unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR); err != nil && !errors.Is(err, unix.ENOENT) {
		return &fs.PathError{Op: "remove", Path: p, Err: err}
	}
	return nil
}
