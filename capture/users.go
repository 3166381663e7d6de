package capture

import (
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// user is a line of /etc/passwd.
type user struct {
	name          string
	uid, gid      int
	gecos, home   string
	shell         string
	supplementary []string // groups that list the user as a member
}

// group is a line of /etc/group.
type group struct {
	name    string
	gid     int
	members []string
}

// idMap maps numeric ids to names with the captured host's own databases (under root).
type idMap struct {
	users  []user
	groups []group
	uname  map[int]string
	gname  map[int]string
}

func readIDs(root string) *idMap {
	m := &idMap{uname: map[int]string{}, gname: map[int]string{}}
	for _, f := range colonFile(filepath.Join(root, "etc/passwd"), 7) {
		uid, err1 := strconv.Atoi(f[2])
		gid, err2 := strconv.Atoi(f[3])
		if err1 != nil || err2 != nil {
			continue
		}
		m.users = append(m.users, user{name: f[0], uid: uid, gid: gid, gecos: f[4], home: f[5], shell: f[6]})
		if _, ok := m.uname[uid]; !ok {
			m.uname[uid] = f[0]
		}
	}
	for _, f := range colonFile(filepath.Join(root, "etc/group"), 4) {
		gid, err := strconv.Atoi(f[2])
		if err != nil {
			continue
		}
		g := group{name: f[0], gid: gid}
		if f[3] != "" {
			g.members = strings.Split(f[3], ",")
		}
		m.groups = append(m.groups, g)
		if _, ok := m.gname[gid]; !ok {
			m.gname[gid] = f[0]
		}
	}
	return m
}

// colonFile reads a colon-separated database, keeping lines with exactly n fields.
func colonFile(p string, n int) [][]string {
	data, err := os.ReadFile(p)
	if err != nil {
		return nil
	}
	var out [][]string
	for _, l := range strings.Split(string(data), "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if f := strings.Split(l, ":"); len(f) == n {
			out = append(out, f)
		}
	}
	return out
}

// names returns the owner and group of a file by name, or by number when the host has no name.
func (m *idMap) names(info fs.FileInfo) (string, string) {
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return "", ""
	}
	u, g := strconv.Itoa(int(st.Uid)), strconv.Itoa(int(st.Gid))
	if n, ok := m.uname[int(st.Uid)]; ok {
		u = n
	}
	if n, ok := m.gname[int(st.Gid)]; ok {
		g = n
	}
	return u, g
}

// Regular accounts, as Debian's adduser makes them (FIRST_UID..LAST_UID of adduser.conf);
// nobody (65534) is a system account.
const (
	firstUID = 1000
	lastUID  = 59999
)

func regularID(id int) bool { return id >= firstUID && id <= lastUID }

// readUsers returns the users and groups that are not system ones, sorted by id. A user's
// supplementary groups are every group (system ones too: sudo, adm) listing it as a member.
func (c *capturer) readUsers() ([]user, []group) {
	var users []user
	var groups []group
	for _, u := range c.ids.users {
		if !regularID(u.uid) {
			continue
		}
		for _, g := range c.ids.groups {
			for _, m := range g.members {
				if m == u.name {
					u.supplementary = append(u.supplementary, g.name)
				}
			}
		}
		sort.Strings(u.supplementary)
		users = append(users, u)
	}
	for _, g := range c.ids.groups {
		if regularID(g.gid) {
			groups = append(groups, g)
		}
	}
	sort.Slice(users, func(i, j int) bool { return users[i].uid < users[j].uid })
	sort.Slice(groups, func(i, j int) bool { return groups[i].gid < groups[j].gid })
	return users, groups
}
