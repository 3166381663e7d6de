package store

import "sync"

// ReturnCommits is the number of return batches s committed.
func ReturnCommits(s *Postgres) int64 { return s.returns.commits.Load() }

// HoldReturns stops s committing returns until the function it returns is called; queued says
// how many wait.
func HoldReturns(s *Postgres) (release func(), queued func() int) {
	s.returns.hold.Lock()
	return sync.OnceFunc(s.returns.hold.Unlock), s.returns.queued
}

// KeyReadRuns is the number of queries s ran for key lookups.
func KeyReadRuns(s *Postgres) int64 { return s.keyReads.runs.Load() }

// HoldKeyReads stops s answering key lookups until the function it returns is called; queued
// says how many wait.
func HoldKeyReads(s *Postgres) (release func(), queued func() int) {
	s.keyReads.hold.Lock()
	return sync.OnceFunc(s.keyReads.hold.Unlock), s.keyReads.queued
}
