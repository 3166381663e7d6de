package master

import (
	"encoding/json"
	"fmt"

	"github.com/brinecm/brine/internal/wire"
	"github.com/brinecm/brine/states"
)

// maxReturn is the most a return of a job of kind may hold: a ping's and a run's are bounded by
// what the minion puts in them (a run's output is cut at wire.MaxRunOutput per stream, which
// JSON may escape to six times its bytes); an apply's report and a capture's files by the
// request frame (an apply's report is checked further by checkApplyReturn).
func maxReturn(kind string) int {
	switch kind {
	case wire.JobPing:
		return 64 << 10
	case wire.JobRun:
		return 2*6*wire.MaxRunOutput + 64<<10
	}
	return wire.MaxRequestFrame
}

// maxApplyError bounds an apply return's error: the minion's are one line (diagnostics go apart).
const maxApplyError = 64 << 10

// checkApplyReturn checks an apply return against what an honest minion sends for any bundle:
// at most states.MaxResources results, each diff and error cut as states.Run cuts them, and all
// of them within its text budget. A return over it was not made by brine's minion; it is
// refused, not stored. (Its bytes are bounded by the frame; what the history keeps in all is
// bounded by job_history_mb.)
func checkApplyReturn(ret wire.Return) error {
	if len(ret.Error) > maxApplyError {
		return fmt.Errorf("an apply return's error is at most %d bytes; this one is %d", maxApplyError, len(ret.Error))
	}
	if len(ret.Report) == 0 {
		return nil
	}
	var rep states.Report
	if err := json.Unmarshal(ret.Report, &rep); err != nil {
		return fmt.Errorf("the report does not parse: %v", err)
	}
	if len(rep.Results) > states.MaxResources {
		return fmt.Errorf("a report has at most %d results (a bundle's resources); this one has %d", states.MaxResources, len(rep.Results))
	}
	text := 0
	for _, r := range rep.Results {
		for _, s := range []string{r.Diff, r.Error} {
			if len(s) > states.MaxResultText() {
				return fmt.Errorf("a result's diff or error is at most %d bytes; %.80q has %d", states.MaxResultText(), r.Address, len(s))
			}
			text += len(s)
		}
	}
	if max := states.MaxReportText(len(rep.Results)); text > max {
		return fmt.Errorf("the diffs and errors of a report of %d results are at most %d bytes; these are %d", len(rep.Results), max, text)
	}
	return nil
}
