package states

import (
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// parseFiles parses every *.hcl file of the bundle, in name order.
func (b *Bundle) parseFiles() ([]*hcl.File, map[string]*hcl.File, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	var files []*hcl.File
	byName := map[string]*hcl.File{}
	for _, n := range b.names() {
		if path.Ext(n) != ".hcl" {
			continue
		}
		name := b.displayName(n)
		f, d := parseConfig(b.Files[n], name)
		diags = append(diags, d...)
		if f != nil {
			files = append(files, f)
			byName[name] = f
		}
	}
	// An .hcl file that ReadBundle left out would silently change what the bundle means.
	var left []string
	for n := range b.escaping {
		if path.Ext(n) == ".hcl" {
			left = append(left, n)
		}
	}
	sort.Strings(left)
	for _, n := range left {
		name := b.displayName(n)
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "File refused",
			Detail: fmt.Sprintf("%s %s, so it is not read. A bundle holds only regular files inside its root: copy the file into the bundle instead.",
				name, b.escaping[n]),
			Subject: &hcl.Range{Filename: name, Start: hcl.InitialPos, End: hcl.InitialPos}})
	}
	return files, byName, diags
}

// displayName is how a bundle file is named in diagnostics: under the directory the user gave.
func (b *Bundle) displayName(n string) string {
	if b.Root == "" {
		return n
	}
	return path.Join(strings.TrimSuffix(b.Root, "/"), n)
}

func topSchema(types *Registry) *hcl.BodySchema {
	s := &hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{{Type: "variable", LabelNames: []string{"name"}}, {Type: "locals"}}}
	for _, n := range types.Names() {
		t := types.Lookup(n)
		labels := make([]string, t.Labels)
		for i := range labels {
			labels[i] = "name"
		}
		s.Blocks = append(s.Blocks, hcl.BlockHeaderSchema{Type: n, LabelNames: labels})
	}
	return s
}

// parseBlocks reads a bundle's files into its top-level blocks.
func parseBlocks(b *Bundle, types *Registry) ([]*hcl.File, []*hcl.Block, hcl.Diagnostics) {
	files, _, diags := b.parseFiles()
	if diags.HasErrors() {
		return nil, nil, diags
	}
	if len(files) == 0 {
		return nil, nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Empty bundle",
			Detail: fmt.Sprintf("No *.hcl files in %s. A bundle is a directory of *.hcl files.", b.displayName("."))}}
	}
	schema := topSchema(types)
	var blocks []*hcl.Block
	for _, f := range files {
		content, d := f.Body.Content(schema)
		diags = append(diags, d...)
		if content != nil {
			blocks = append(blocks, content.Blocks...)
		}
	}
	return files, blocks, diags
}
