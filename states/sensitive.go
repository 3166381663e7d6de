package states

import (
	"errors"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
)

// Sensitive values are tracked as cty marks, as Terraform does: secret() and variables declared
// `sensitive = true` return marked values, and cty carries the mark through every function,
// template, interpolation, conditional and reference that uses them. A resource receives its
// arguments unmarked (resource types work on plain Go values) but the engine knows which of
// its arguments were marked, and the report hides them (see Type.HidesSensitive).
//
// The clear text of every sensitive value seen while compiling is also kept, and scrubbed from
// diffs, errors and diagnostics: a second line of defence for text the marks cannot follow (a
// command's output that echoes its sensitive argument, a decoder's message quoting a value).

type markKind string

// sensitiveMark is the cty mark of values derived from secret() or a sensitive variable.
const sensitiveMark = markKind("sensitive")

// sensitivePlaceholder replaces the clear text of a sensitive value in any output.
const sensitivePlaceholder = "(sensitive)"

// sensitivity collects the clear text of the sensitive values seen during one Compile.
// Compile runs on one goroutine; no lock.
type sensitivity struct {
	seen   map[string]bool
	marked bool // markSensitive was called: some value of the compile is sensitive
}

// note records the clear text of every marked string (and number) inside v.
func (s *sensitivity) note(v cty.Value) { s.noteText(v, false) }

// noteText is note; with lines, each line of a multi-line text is recorded too. Only a source
// of sensitivity (a secret, a sensitive variable) is split: its lines are secret material. A
// derived value (a rendered template) has mostly public lines, and those holding the secret
// hold a source's text or lines already.
func (s *sensitivity) noteText(v cty.Value, lines bool) {
	if s == nil || !v.ContainsMarked() {
		return
	}
	unmarked, pvms := v.UnmarkDeepWithPaths()
	for _, pvm := range pvms {
		if _, ok := pvm.Marks[sensitiveMark]; !ok {
			continue
		}
		sub, err := pvm.Path.Apply(unmarked)
		if err != nil {
			sub = unmarked // a path into a set: record the whole value rather than nothing
		}
		_ = cty.Walk(sub, func(_ cty.Path, leaf cty.Value) (bool, error) {
			if !leaf.IsKnown() || leaf.IsNull() {
				return false, nil
			}
			switch leaf.Type() {
			case cty.String:
				s.add(leaf.AsString(), lines)
			case cty.Number:
				if t := leaf.AsBigFloat().Text('f', -1); len(t) >= 3 {
					s.add(t, false)
				}
			}
			return true, nil
		})
	}
}

func (s *sensitivity) add(text string, lines bool) {
	// Whitespace around a value carries none of it, and replacing it would join lines.
	if text = strings.TrimSpace(text); text == "" {
		return
	}
	if s.seen == nil {
		s.seen = map[string]bool{}
	}
	s.seen[text] = true
	// A multi-line value (a PEM key) may reach output one line at a time (a diff, a command's
	// output): each of its lines counts too, but for lines under 3 characters ("}", "=="),
	// which say nothing and would blank out unrelated text.
	if lines && strings.Contains(text, "\n") {
		for _, line := range strings.Split(text, "\n") {
			if line = strings.TrimSpace(line); len(line) >= 3 {
				s.seen[line] = true
			}
		}
	}
}

// texts returns the recorded clear texts, longest first, so that a value containing another is
// replaced whole.
func (s *sensitivity) texts() []string {
	if s == nil {
		return nil
	}
	out := make([]string, 0, len(s.seen))
	for t := range s.seen {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool {
		if len(out[i]) != len(out[j]) {
			return len(out[i]) > len(out[j])
		}
		return out[i] < out[j]
	})
	return out
}

// scrub replaces every recorded clear text in s with the placeholder.
func scrub(s string, texts []string) string {
	for _, t := range texts {
		if strings.Contains(s, t) {
			s = strings.ReplaceAll(s, t, sensitivePlaceholder)
		}
	}
	return s
}

// scrubDiagnostics scrubs the text of diagnostics in place.
func scrubDiagnostics(diags hcl.Diagnostics, texts []string) {
	if len(texts) == 0 {
		return
	}
	for _, d := range diags {
		d.Summary = scrub(d.Summary, texts)
		d.Detail = scrub(d.Detail, texts)
	}
}

// markSensitive marks v as sensitive and records its clear text.
func (s *sensitivity) markSensitive(v cty.Value) cty.Value {
	if s != nil {
		s.marked = true
	}
	v = v.Mark(sensitiveMark)
	s.noteText(v, true)
	return v
}

// trackFunc wraps a function so that (1) every sensitive result it returns is recorded, and
// (2) an error about sensitive arguments does not quote them: cty's functions often put the
// offending value in their message ("cannot parse "s3cret" as a number"), which would reach the
// diagnostics. Marks themselves are handled by cty: the wrapped function sees its arguments
// unmarked unless it opts in, and its result carries their marks.
func trackFunc(f function.Function, s *sensitivity) function.Function {
	params := f.Params()
	spec := &function.Spec{Params: make([]function.Parameter, len(params))}
	for i, p := range params {
		p.AllowMarked = true // seen here, passed on to f.Call, which applies f's own rules
		spec.Params[i] = p
	}
	if vp := f.VarParam(); vp != nil {
		p := *vp
		p.AllowMarked = true
		spec.VarParam = &p
	}
	spec.Type = func(args []cty.Value) (cty.Type, error) {
		t, err := f.ReturnTypeForValues(args)
		return t, hideError(err, args)
	}
	spec.Impl = func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		v, err := f.Call(args)
		if err != nil {
			return cty.NilVal, hideError(err, args)
		}
		s.note(v)
		return v, nil
	}
	return function.New(spec)
}

// hideError replaces err with one that quotes nothing when any argument is sensitive, keeping
// the argument index so the diagnostic still points at the right argument.
func hideError(err error, args []cty.Value) error {
	if err == nil {
		return nil
	}
	sensitive := false
	for _, a := range args {
		if a.ContainsMarked() {
			sensitive = true
		}
	}
	if !sensitive {
		return err
	}
	var argErr function.ArgError
	if errors.As(err, &argErr) {
		return function.NewArgErrorf(argErr.Index, "the value is invalid here; it is sensitive, so it is not shown")
	}
	return errors.New("the function failed on a sensitive value, which is not shown")
}

// nodeSensitivity records which arguments of one resource block received sensitive values.
type nodeSensitivity struct {
	attrs   map[string]bool // argument name ("block.arg" inside nested blocks) -> sensitive
	tracker *sensitivity
}

func (n *nodeSensitivity) mark(name string, v cty.Value) {
	if n.attrs == nil {
		n.attrs = map[string]bool{}
	}
	n.attrs[name] = true
	n.tracker.note(v)
}

// absorb adds o's sensitive arguments to n's (the blocks of a merged resource).
func (n *nodeSensitivity) absorb(o *nodeSensitivity) {
	if o == nil {
		return
	}
	for a := range o.attrs {
		if n.attrs == nil {
			n.attrs = map[string]bool{}
		}
		n.attrs[a] = true
	}
}

// names returns the sensitive argument names, sorted.
func (n *nodeSensitivity) names() []string {
	out := make([]string, 0, len(n.attrs))
	for a := range n.attrs {
		out = append(out, a)
	}
	sort.Strings(out)
	return out
}

// sensitiveBody wraps a resource body so that every value the resource type decodes from it is
// unmarked (types work on plain values) and every marked one is recorded against its argument.
type sensitiveBody struct {
	hcl.Body
	prefix string
	ns     *nodeSensitivity
}

func (b sensitiveBody) Content(schema *hcl.BodySchema) (*hcl.BodyContent, hcl.Diagnostics) {
	c, diags := b.Body.Content(schema)
	return b.wrapContent(c), diags
}

func (b sensitiveBody) PartialContent(schema *hcl.BodySchema) (*hcl.BodyContent, hcl.Body, hcl.Diagnostics) {
	c, remain, diags := b.Body.PartialContent(schema)
	if remain != nil {
		remain = sensitiveBody{Body: remain, prefix: b.prefix, ns: b.ns}
	}
	return b.wrapContent(c), remain, diags
}

func (b sensitiveBody) JustAttributes() (hcl.Attributes, hcl.Diagnostics) {
	attrs, diags := b.Body.JustAttributes()
	return b.wrapAttrs(attrs), diags
}

func (b sensitiveBody) wrapAttrs(attrs hcl.Attributes) hcl.Attributes {
	if attrs == nil {
		return nil
	}
	out := make(hcl.Attributes, len(attrs))
	for name, a := range attrs {
		wa := *a
		wa.Expr = sensitiveExpr{Expression: a.Expr, name: b.prefix + name, ns: b.ns}
		out[name] = &wa
	}
	return out
}

func (b sensitiveBody) wrapContent(c *hcl.BodyContent) *hcl.BodyContent {
	if c == nil {
		return nil
	}
	out := *c
	out.Attributes = b.wrapAttrs(c.Attributes)
	out.Blocks = make(hcl.Blocks, len(c.Blocks))
	for i, blk := range c.Blocks {
		wb := *blk
		wb.Body = sensitiveBody{Body: blk.Body, prefix: b.prefix + blk.Type + ".", ns: b.ns}
		out.Blocks[i] = &wb
	}
	return &out
}

// sensitiveExpr unmarks the value of an argument and records that it was sensitive. It does not
// unwrap (hcl.ExprList and friends see no inner expression), so no marked value can reach a
// resource type by another way.
type sensitiveExpr struct {
	hcl.Expression
	name string
	ns   *nodeSensitivity
}

func (e sensitiveExpr) Value(ctx *hcl.EvalContext) (cty.Value, hcl.Diagnostics) {
	v, diags := e.Expression.Value(ctx)
	if v.ContainsMarked() {
		e.ns.mark(e.name, v)
		v, _ = v.UnmarkDeep()
	}
	return v, diags
}
