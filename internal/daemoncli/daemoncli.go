// Package daemoncli holds what the command lines of brine's daemons share: `brine master`,
// `brine minion` and the minion-only binary brine-minion. It imports pflag and the standard
// library only, so that brine-minion links nothing of the master's.
package daemoncli

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"

	"github.com/spf13/pflag"
)

// LogFlags are the daemons' --log-level and --log-format.
type LogFlags struct {
	level, format string
}

// Register adds --log-level and --log-format to fs.
func (f *LogFlags) Register(fs *pflag.FlagSet) {
	fs.StringVar(&f.level, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&f.format, "log-format", "text", "log format: text or json (one JSON object a line)")
}

// Logger returns the logger the flags ask for, writing to w.
func (f *LogFlags) Logger(w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(f.level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", f.level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(f.format) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", f.format)
}

// ConfigPath returns given when set, else def when that file exists, else "" (built-in
// defaults). A def that exists but cannot be read is returned too, so that the error names it.
// The daemons read their default config file this way, as Salt reads /etc/salt/master: the
// shipped units rely on it and work without the file.
func ConfigPath(given, def string) string {
	if given != "" {
		return given
	}
	if _, err := os.Stat(def); errors.Is(err, fs.ErrNotExist) {
		return ""
	}
	return def
}

// Version is the version a binary reports: stamped (set at build time with -ldflags "-X
// main.version=...") unless it is "dev"; else, for a `go install` build, its module version
// or VCS revision from the build info.
func Version(stamped string) string {
	if stamped != "dev" {
		return stamped
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return stamped
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			return "dev-" + s.Value[:12]
		}
	}
	return stamped
}
