// Package hclfile reads a daemon's HCL config file into a struct, with diagnostics that name
// the file, line and column.
package hclfile

import (
	"os"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// Decode parses the HCL file at path and decodes it into v (a pointer to a struct with hcl
// tags). what names the file in an error that it cannot be read ("master config").
func Decode(path, what string, v any) hcl.Diagnostics {
	src, err := os.ReadFile(path)
	if err != nil {
		return hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Cannot read " + what, Detail: err.Error()}}
	}
	f, diags := hclsyntax.ParseConfig(src, path, hcl.InitialPos)
	if diags.HasErrors() {
		return diags
	}
	return gohcl.DecodeBody(f.Body, nil, v)
}
