package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestNoRegexpCompiledAtInit checks that no brine package linked into brine-minion compiles a
// regular expression when the program starts (a package-level regexp.MustCompile): the program
// stays on the heap for the minion's life whether or not a job ever uses it, so such patterns
// are internal/lazyre's, compiled on first use (BENCHMARKS.md, "The minion alone").
func TestNoRegexpCompiledAtInit(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}\t{{.Dir}}\t{{join .GoFiles \" \"}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		parts := strings.SplitN(line, "\t", 3)
		if len(parts) != 3 || !strings.HasPrefix(parts[0], "github.com/brinecm/brine/") {
			continue
		}
		for _, name := range strings.Fields(parts[2]) {
			path := filepath.Join(parts[1], name)
			fset := token.NewFileSet()
			f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
			if err != nil {
				t.Fatal(err)
			}
			checked++
			for _, at := range initCompiles(fset, f) {
				t.Errorf("%s:%d: a package-level regexp.%s; use internal/lazyre", path, at.line, at.fn)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no brine source file found in go list's output")
	}
}

type compileAt struct {
	fn   string
	line int
}

// initCompiles returns the calls of regexp's compile functions in f's package-level variable
// declarations (not inside function literals, which run later).
func initCompiles(fset *token.FileSet, f *ast.File) []compileAt {
	local := ""
	for _, imp := range f.Imports {
		if p, _ := strconv.Unquote(imp.Path.Value); p == "regexp" {
			local = "regexp"
			if imp.Name != nil {
				local = imp.Name.Name
			}
		}
	}
	if local == "" {
		return nil
	}
	var found []compileAt
	for _, d := range f.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok || gd.Tok != token.VAR {
			continue
		}
		ast.Inspect(gd, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.FuncLit:
				return false
			case *ast.CallExpr:
				sel, ok := n.Fun.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				if x, ok := sel.X.(*ast.Ident); ok && x.Name == local && (sel.Sel.Name == "MustCompile" || sel.Sel.Name == "MustCompilePOSIX") {
					found = append(found, compileAt{sel.Sel.Name, fset.Position(n.Pos()).Line})
				}
			}
			return true
		})
	}
	return found
}
