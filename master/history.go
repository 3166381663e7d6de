package master

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"time"

	"golang.org/x/sys/unix"

	"github.com/brinecm/brine/internal/jobstore"
)

// maxJobsList bounds what one `brine jobs list` reads.
const maxJobsList = 10000

// JobsList returns the newest limit jobs (1..maxJobsList; 0: 50) with their outcomes.
func (m *Master) JobsList(limit int) ([]JobSummary, error) {
	if limit <= 0 {
		limit = 50
	}
	limit = min(limit, maxJobsList)
	jobs, err := m.store.Jobs(limit)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	out := make([]JobSummary, len(jobs))
	for i, j := range jobs {
		s := JobSummary{Job: j, Waiting: now.Before(j.Expires)}
		o, err := m.outcome(j.JID)
		if err != nil {
			return nil, err
		}
		s.Succeeded, s.Failed = o.Succeeded, o.Returned-o.Succeeded
		s.NoReturn = max(0, len(j.Minions)-o.Returned)
		out[i] = s
	}
	return out, nil
}

// outcome counts jid's returns: from the store's counts when it keeps them, else from the returns.
func (m *Master) outcome(jid string) (jobstore.Outcome, error) {
	if oc, ok := m.store.(jobstore.OutcomeCounter); ok {
		if o, ok, err := oc.Outcome(jid); err != nil || ok {
			return o, err
		}
	}
	rs, err := m.store.Returns(jid)
	if err != nil {
		return jobstore.Outcome{}, err
	}
	var o jobstore.Outcome
	for _, r := range rs {
		var ret struct {
			Success bool `json:"success"`
		}
		_ = json.Unmarshal(r.Data, &ret)
		o.Returned++
		if ret.Success {
			o.Succeeded++
		}
	}
	return o, nil
}

type startedByKey struct{}

// WithStartedBy returns ctx carrying who starts the jobs run under it ("uid 1000",
// "schedule nightly"), for the job history.
func WithStartedBy(ctx context.Context, who string) context.Context {
	return context.WithValue(ctx, startedByKey{}, who)
}

func startedBy(ctx context.Context) string {
	s, _ := ctx.Value(startedByKey{}).(string)
	return s
}

// peerUID names the user at the other end of a control connection, from the kernel's
// credentials of the socket (SO_PEERCRED): what the peer says about itself is not asked.
func peerUID(c net.Conn) string {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return ""
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return ""
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || cerr != nil {
		return ""
	}
	return fmt.Sprintf("uid %d", cred.Uid)
}

// pruneLoop applies job_retention, job_max and job_history_mb in the background: at start,
// every minute (or a quarter of job_retention), and after jobs are published (m.pruneKick, at
// most every pruneMinGap).
func (m *Master) pruneLoop() {
	every := min(max(m.cfg.jobRetention/4, time.Second), time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		m.pruneHistory()
		last := time.Now()
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
		case <-m.pruneKick:
			// Jobs are published in bursts: prune at most once per pruneMinGap for them.
			select {
			case <-m.ctx.Done():
				return
			case <-time.After(time.Until(last.Add(pruneMinGap))):
			}
		}
	}
}

// pruneHistory prunes the job history once, and records its bytes for the metrics.
func (m *Master) pruneHistory() {
	cutoff := time.Now().Add(-m.cfg.jobRetention)
	if n, err := m.store.Prune(cutoff, m.cfg.JobMax, m.cfg.historyBytes); err != nil {
		m.log.Error("pruning the job history failed", "err", err)
	} else if n > 0 {
		m.log.Info("pruned the job history", "jobs", n, "job_retention", m.cfg.JobRetention, "job_max", m.cfg.JobMax, "job_history_mb", m.cfg.JobHistoryMB)
	}
	if b, err := m.store.HistoryBytes(); err == nil {
		m.historyBytes.Store(b)
	}
}

// pruneMinGap is the least time between two prunes that new jobs ask for.
const pruneMinGap = 5 * time.Second

// kickPrune asks pruneLoop to run soon (a job was recorded); it never blocks.
func (m *Master) kickPrune() {
	select {
	case m.pruneKick <- struct{}{}:
	default:
	}
}

// maxBundleName bounds the bundle name the CLI sends for the history.
const maxBundleName = 200

// cleanBundleName keeps a printable, bounded bundle name.
func cleanBundleName(s string) string {
	out := make([]rune, 0, len(s))
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || len(out) >= maxBundleName {
			continue
		}
		out = append(out, r)
	}
	return string(out)
}

// startBackground starts the master's background work: pruning the job history, schedules.
func (m *Master) startBackground() {
	m.wg.Add(1)
	go func() { defer m.wg.Done(); m.pruneLoop() }()
	m.startSchedules()
	m.serveMetrics()
}
