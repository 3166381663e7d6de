package capture

import (
	"bufio"
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// dpkgDB is what the capture needs of the dpkg and apt databases: installed packages, the
// packages installed by hand, every path a package ships, the pristine digest of every conffile,
// and the digests of every file a package ships (to recognise a copy a maintainer script made).
type dpkgDB struct {
	installed map[string]string // name (name:arch for foreign architectures) -> version
	manual    []string          // installed and not marked Auto-Installed by apt, sorted
	owned     map[string]string // path -> a package shipping it
	conffiles map[string]conffile
	// shipped holds the md5 of every file every package ships (md5sums), and of ucf's pristine
	// copies: an unowned file under /etc with one of these digests is a copy a maintainer
	// script put there, which the package recreates on a fresh host.
	shipped map[string]bool
	// ucf maps a path that ucf manages to the digest of the version its package shipped.
	ucf map[string]string
}

type conffile struct {
	pkg, md5 string
	obsolete bool
}

// readDpkg reads the databases under root (/ on a live host).
func readDpkg(root string) (*dpkgDB, error) {
	db := &dpkgDB{installed: map[string]string{}, owned: map[string]string{}, conffiles: map[string]conffile{},
		shipped: map[string]bool{}, ucf: map[string]string{}}
	status, err := os.ReadFile(filepath.Join(root, "var/lib/dpkg/status"))
	if err != nil {
		return nil, fmt.Errorf("dpkg database: %w", err)
	}
	native := nativeArch(root)
	auto := readAutoInstalled(root)
	for _, para := range bytes.Split(status, []byte("\n\n")) {
		f := parseControl(para)
		name := f["Package"]
		if name == "" || !strings.HasSuffix(f["Status"], " installed") {
			continue
		}
		key := name
		if a := f["Architecture"]; a != "" && a != "all" && a != native {
			key = name + ":" + a
		}
		db.installed[key] = f["Version"]
		if !auto[key] && !auto[name+":"+f["Architecture"]] {
			db.manual = append(db.manual, key)
		}
		for _, l := range strings.Split(f["Conffiles"], "\n") {
			w := strings.Fields(l)
			if len(w) < 2 {
				continue
			}
			db.conffiles[w[0]] = conffile{pkg: name, md5: w[1], obsolete: len(w) > 2 && w[2] == "obsolete"}
		}
	}
	sort.Strings(db.manual)
	info := filepath.Join(root, "var/lib/dpkg/info")
	lists, _ := filepath.Glob(filepath.Join(info, "*.list"))
	for _, l := range lists {
		pkg := strings.TrimSuffix(filepath.Base(l), ".list")
		pkg, _, _ = strings.Cut(pkg, ":")
		data, err := os.ReadFile(l)
		if err != nil {
			continue
		}
		for _, p := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(p, "/etc") {
				db.owned[p] = pkg
			}
		}
	}
	sums, _ := filepath.Glob(filepath.Join(info, "*.md5sums"))
	for _, s := range sums {
		data, err := os.ReadFile(s)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(data), "\n") {
			if len(l) > 32 {
				db.shipped[l[:32]] = true
			}
		}
	}
	// Diverted files: both the original path and where it went belong to packages.
	if data, err := os.ReadFile(filepath.Join(root, "var/lib/dpkg/diversions")); err == nil {
		lines := strings.Split(string(data), "\n")
		for i := 0; i+2 < len(lines); i += 3 {
			db.owned[lines[i]] = lines[i+2]
			db.owned[lines[i+1]] = lines[i+2]
		}
	}
	if data, err := os.ReadFile(filepath.Join(root, "var/lib/ucf/hashfile")); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if sum, p, ok := strings.Cut(l, "  "); ok && len(sum) == 32 {
				db.ucf[p] = sum
			}
		}
	}
	return db, nil
}

// readAutoInstalled returns the packages apt marked as installed automatically.
func readAutoInstalled(root string) map[string]bool {
	auto := map[string]bool{}
	data, err := os.ReadFile(filepath.Join(root, "var/lib/apt/extended_states"))
	if err != nil {
		return auto
	}
	for _, para := range bytes.Split(data, []byte("\n\n")) {
		f := parseControl(para)
		if f["Auto-Installed"] == "1" && f["Package"] != "" {
			auto[f["Package"]] = true
			if a := f["Architecture"]; a != "" {
				auto[f["Package"]+":"+a] = true
			}
		}
	}
	return auto
}

// nativeArch is dpkg's architecture, from the arch of the packages that are essential to it.
func nativeArch(root string) string {
	if data, err := os.ReadFile(filepath.Join(root, "var/lib/dpkg/arch-native")); err == nil {
		return strings.TrimSpace(string(data))
	}
	return debArch()
}

// parseControl reads one deb822 paragraph; continuation lines are joined with newlines.
func parseControl(para []byte) map[string]string {
	f := map[string]string{}
	last := ""
	sc := bufio.NewScanner(bytes.NewReader(para))
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		l := sc.Text()
		if l == "" {
			continue
		}
		if (l[0] == ' ' || l[0] == '\t') && last != "" {
			f[last] += "\n" + l
			continue
		}
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		last = k
		f[k] = strings.TrimSpace(v)
	}
	return f
}

func md5Hex(b []byte) string {
	s := md5.Sum(b)
	return hex.EncodeToString(s[:])
}
