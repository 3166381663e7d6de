// Package lazyre holds package-level regular expressions that are compiled on first use rather
// than when the program starts. A pattern with a counted repetition ({0,253}) compiles into a
// program of up to a hundred kilobytes; brine links every subcommand into one binary, so a
// minion used to compile and keep the cloud client's, the simulator's and the testbed's patterns
// that it never runs (BENCHMARKS.md, "one minion's memory").
package lazyre

import (
	"regexp"
	"sync"
)

// Regexp is a regular expression compiled the first time it is used. Its expression is a
// constant of the program: an invalid one panics on first use (its package's tests use it).
type Regexp struct {
	expr string
	once sync.Once
	re   *regexp.Regexp
}

// New returns a Regexp for expr, not compiled yet.
func New(expr string) *Regexp { return &Regexp{expr: expr} }

// Get returns the compiled expression.
func (r *Regexp) Get() *regexp.Regexp {
	r.once.Do(func() { r.re = regexp.MustCompile(r.expr) })
	return r.re
}

// MatchString reports whether s contains a match.
func (r *Regexp) MatchString(s string) bool { return r.Get().MatchString(s) }

// FindAllStringSubmatch is regexp.Regexp.FindAllStringSubmatch.
func (r *Regexp) FindAllStringSubmatch(s string, n int) [][]string {
	return r.Get().FindAllStringSubmatch(s, n)
}

// String returns the expression.
func (r *Regexp) String() string { return r.expr }
