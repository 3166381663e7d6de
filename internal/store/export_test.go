package store

// ReturnCommits is the number of return batches s committed.
func ReturnCommits(s *Postgres) int64 { return s.returns.commits.Load() }
