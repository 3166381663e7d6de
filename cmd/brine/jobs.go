package main

import (
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/brinecm/brine/control"
	"github.com/brinecm/brine/internal/jobstore"
)

// bundleName is how the job history names the bundle in dir: its directory's name.
func bundleName(dir string) string {
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	return filepath.Base(dir)
}

// shortDigest keeps enough of a bundle digest to tell bundles apart in a table.
func shortDigest(d string) string {
	d = strings.TrimPrefix(d, "sha256:")
	if len(d) > 12 {
		d = d[:12]
	}
	return d
}

// outcome is a job's outcome in words: "3 ok, 1 failed, 2 no return".
func outcome(j control.JobSummary) string {
	var parts []string
	if j.Succeeded > 0 || (j.Failed == 0 && j.NoReturn == 0) {
		parts = append(parts, strconv.Itoa(j.Succeeded)+" ok")
	}
	if j.Failed > 0 {
		parts = append(parts, strconv.Itoa(j.Failed)+" failed")
	}
	if j.NoReturn > 0 {
		w := "no return"
		if j.Waiting {
			w = "running"
		}
		parts = append(parts, fmt.Sprintf("%d %s", j.NoReturn, w))
	}
	return strings.Join(parts, ", ")
}

// printJobs prints `brine jobs list`: one job a line, newest first.
func printJobs(w io.Writer, jobs []control.JobSummary) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "JID\tKIND\tTARGET\tBY\tBUNDLE\tOUTCOME")
	for _, j := range jobs {
		kind := j.Kind
		if j.DryRun {
			kind += " (dry run)"
		}
		bundle := "-"
		if j.Digest != "" {
			bundle = cmpOr(j.Bundle, "?") + "@" + shortDigest(j.Digest)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", j.JID, kind, escapeOutput(j.Target), cmpOr(j.StartedBy, "-"), escapeOutput(bundle), outcome(j))
	}
	tw.Flush()
}

// printJobHeader is the first line of `brine jobs show`.
func printJobHeader(w io.Writer, j jobstore.Job) {
	fmt.Fprintf(w, "job %s  %s  target %q  %s", j.JID, j.Kind, j.Target, j.Created.Local().Format(time.DateTime))
	if j.StartedBy != "" {
		fmt.Fprintf(w, "  by %s", j.StartedBy)
	}
	if j.Digest != "" {
		fmt.Fprintf(w, "  bundle %s %s", escapeOutput(cmpOr(j.Bundle, "?")), j.Digest)
	}
	fmt.Fprintln(w)
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// escapeLines escapes each line of s for the terminal, keeping the line breaks.
func escapeLines(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = escapeOutput(l)
	}
	return strings.Join(lines, "\n")
}
