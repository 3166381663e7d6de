// Package hclfile reads a daemon's HCL config file into a struct, with diagnostics that name
// the file, line and column: of a syntax error, of an unknown argument, and of a value that
// parsed but is not valid (FieldError).
package hclfile

import (
	"errors"
	"os"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// maxConfigSize bounds a config file read whole (they are a few KiB).
const maxConfigSize = 4 << 20

// Decode parses the HCL file at path and decodes it into v (a pointer to a struct with hcl
// tags). what names the file in an error that it cannot be read ("master config").
func Decode(path, what string, v any) hcl.Diagnostics {
	f, diags := parse(path, what)
	if diags.HasErrors() {
		return diags
	}
	return gohcl.DecodeBody(f.Body, nil, v)
}

func parse(path, what string) (*hcl.File, hcl.Diagnostics) {
	st, err := os.Stat(path)
	if err == nil && st.Size() > maxConfigSize {
		err = errors.New("larger than 4 MiB")
	}
	var src []byte
	if err == nil {
		src, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Cannot read " + what, Detail: err.Error()}}
	}
	return hclsyntax.ParseConfig(src, path, hcl.InitialPos)
}

// FieldError is a config value that decoded but is not valid. Field is its place as written:
// block types, block labels and the attribute name, e.g. {"schedule", "nightly", "every"};
// an empty Field is the file as a whole.
type FieldError struct {
	Field []string
	Err   error
}

func (e *FieldError) Error() string {
	if len(e.Field) == 0 {
		return e.Err.Error()
	}
	return strings.Join(e.Field, ".") + ": " + e.Err.Error()
}

func (e *FieldError) Unwrap() error { return e.Err }

// Field wraps err as the error of the field at path (nil stays nil).
func Field(err error, path ...string) error {
	if err == nil {
		return nil
	}
	return &FieldError{Field: path, Err: err}
}

// Diagnose turns an error found while validating the decoded file at path into a diagnostic
// (summary, e.g. "Invalid master config"). A FieldError points at the field's range in the
// file; a field not written there (a default, a flag) or any other error names the file.
func Diagnose(path, summary string, err error) hcl.Diagnostics {
	d := &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: err.Error()}
	var fe *FieldError
	if errors.As(err, &fe) && path != "" {
		d.Detail = fe.Err.Error()
		if f, diags := parse(path, ""); !diags.HasErrors() {
			if body, ok := f.Body.(*hclsyntax.Body); ok {
				d.Subject = locate(body, fe.Field)
			}
		}
		if d.Subject == nil && len(fe.Field) > 0 {
			d.Detail = strings.Join(fe.Field, ".") + ": " + d.Detail
		}
	}
	if d.Subject == nil && path != "" {
		d.Summary += " (" + path + ")"
	}
	return hcl.Diagnostics{d}
}

// locate finds the range of the attribute or block that field names in body, or nil.
func locate(body *hclsyntax.Body, field []string) *hcl.Range {
	if len(field) == 0 {
		return nil
	}
	if a, ok := body.Attributes[field[0]]; ok && len(field) == 1 {
		r := a.Expr.Range()
		return &r
	}
	for _, b := range body.Blocks {
		if b.Type != field[0] {
			continue
		}
		rest := field[1:]
		if len(b.Labels) > 0 {
			if len(rest) == 0 || b.Labels[0] != rest[0] {
				continue
			}
			rest = rest[1:]
		}
		if len(rest) == 0 {
			r := b.DefRange()
			return &r
		}
		if r := locate(b.Body, rest); r != nil {
			return r
		}
		r := b.DefRange()
		return &r
	}
	return nil
}
