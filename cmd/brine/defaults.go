package main

import (
	"errors"
	"io/fs"
	"os"
)

// The config files the daemons read when -c is not given and the file exists, as Salt reads
// /etc/salt/master: the shipped units rely on it and work without the file (built-in defaults).
const (
	defaultMasterConfig = "/etc/brine/master.hcl"
	defaultMinionConfig = "/etc/brine/minion.hcl"
)

// configPath returns given when set, else def when that file exists, else "" (built-in
// defaults). A def that exists but cannot be read is returned too, so that the error names it.
func configPath(given, def string) string {
	if given != "" {
		return given
	}
	if _, err := os.Stat(def); errors.Is(err, fs.ErrNotExist) {
		return ""
	}
	return def
}
