package wire

import "encoding/json"

// JobCapture is a job in which each minion captures itself as a bundle (`brine capture`,
// docs/capture.md). Like every job it is signed by the master and published only for an
// operator's command on the control socket: a capture holds configuration files.
const JobCapture = "capture"

// MaxCaptureFiles bounds the bytes of the bundle files in one capture's return; a larger capture
// fails on the minion with a message that names --max-file-size and --exclude. It keeps a
// return well under MaxRequestFrame once encoded.
const MaxCaptureFiles = 6 << 20

// CaptureSpec are the options of a JobCapture job (those of `brine local capture`).
type CaptureSpec struct {
	Exclude     []string `json:"exclude,omitempty"`
	MaxFileSize int64    `json:"max_file_size,omitempty"`
	MaxFiles    int      `json:"max_files,omitempty"`
}

// CaptureReport is what a minion returns for a JobCapture job, in Return.Report: the bundle's
// files by slash-separated path, and the capture's summary (capture.Summary).
type CaptureReport struct {
	Files   map[string][]byte `json:"files"`
	Summary json.RawMessage   `json:"summary"`
}
