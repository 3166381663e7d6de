package states

import (
	"fmt"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// MaxNesting bounds how deep HCL source may nest: brackets, braces, blocks, quotes, template
// interpolations and directives, plus the operators chained in one expression. HCL's parser,
// evaluator and walkers recurse once per level, and a Go stack overflow is fatal (no recover):
// 100,000 nested brackets in a bundle would kill the CLI, the master validating the bundle, and
// every minion compiling it. Real bundles stay far below this.
const MaxNesting = 500

// checkNesting scans src with HCL's lexer (a state machine, no recursion) and returns an error
// diagnostic at the first token where the nesting goes over MaxNesting. template selects the
// template lexer (templatefile, file templates) instead of the config one.
func checkNesting(src []byte, filename string, template bool) hcl.Diagnostics {
	if depthBound(src) <= MaxNesting {
		return nil // most files: too few of the characters that nest to nest too deep
	}
	var toks hclsyntax.Tokens
	if template {
		toks, _ = hclsyntax.LexTemplate(src, filename, hcl.InitialPos)
	} else {
		toks, _ = hclsyntax.LexConfig(src, filename, hcl.InitialPos)
	}
	// One level per open bracket (or block, quote, interpolation, if/for directive); each
	// counts the operators of the expression it is in since the last separator, since chains
	// of operators (!!!!x, a ? b : a ? b : ..., x - y - z ...) nest in the syntax tree too.
	type level struct {
		close hclsyntax.TokenType // the token that ends it
		brace bool                // newlines separate items here (block bodies, objects)
		ops   int
	}
	stack := []level{{brace: true}}
	depth := 0 // len(stack) + the sum of ops, kept up to date
	closes := map[hclsyntax.TokenType]hclsyntax.TokenType{
		hclsyntax.TokenOBrace: hclsyntax.TokenCBrace, hclsyntax.TokenOBrack: hclsyntax.TokenCBrack,
		hclsyntax.TokenOParen: hclsyntax.TokenCParen, hclsyntax.TokenOQuote: hclsyntax.TokenCQuote,
		hclsyntax.TokenOHeredoc: hclsyntax.TokenCHeredoc, hclsyntax.TokenTemplateInterp: hclsyntax.TokenTemplateSeqEnd,
		hclsyntax.TokenTemplateControl: hclsyntax.TokenTemplateSeqEnd,
	}
	push := func(l level) {
		stack = append(stack, l)
		depth++
	}
	pop := func(want hclsyntax.TokenType) {
		// Unbalanced input is the parser's to report; here it only must not go below the root.
		for i := len(stack) - 1; i > 0; i-- {
			if stack[i].close == want {
				for len(stack) > i {
					depth -= 1 + stack[len(stack)-1].ops
					stack = stack[:len(stack)-1]
				}
				return
			}
		}
	}
	for i, tok := range toks {
		top := &stack[len(stack)-1]
		switch tok.Type {
		case hclsyntax.TokenOBrace, hclsyntax.TokenOBrack, hclsyntax.TokenOParen, hclsyntax.TokenOQuote,
			hclsyntax.TokenOHeredoc, hclsyntax.TokenTemplateInterp:
			top.ops++ // x[i][i][i]... nests as much as [[[...]]]
			depth++
			push(level{close: closes[tok.Type], brace: tok.Type == hclsyntax.TokenOBrace})
		case hclsyntax.TokenTemplateControl:
			// %{ if } and %{ for } open a body that %{ endif } / %{ endfor } closes.
			if i+1 < len(toks) && toks[i+1].Type == hclsyntax.TokenIdent {
				switch string(toks[i+1].Bytes) {
				case "if", "for":
					push(level{close: hclsyntax.TokenNil})
				case "endif", "endfor":
					pop(hclsyntax.TokenNil)
				}
			}
			push(level{close: hclsyntax.TokenTemplateSeqEnd})
		case hclsyntax.TokenCBrace, hclsyntax.TokenCBrack, hclsyntax.TokenCParen, hclsyntax.TokenCQuote,
			hclsyntax.TokenCHeredoc, hclsyntax.TokenTemplateSeqEnd:
			pop(tok.Type)
		case hclsyntax.TokenComma:
			depth -= top.ops
			top.ops = 0
		case hclsyntax.TokenNewline:
			if top.brace {
				depth -= top.ops
				top.ops = 0
			}
		case hclsyntax.TokenBang, hclsyntax.TokenMinus, hclsyntax.TokenPlus, hclsyntax.TokenStar,
			hclsyntax.TokenSlash, hclsyntax.TokenPercent, hclsyntax.TokenEqualOp, hclsyntax.TokenNotEqual,
			hclsyntax.TokenLessThan, hclsyntax.TokenLessThanEq, hclsyntax.TokenGreaterThan,
			hclsyntax.TokenGreaterThanEq, hclsyntax.TokenAnd, hclsyntax.TokenOr, hclsyntax.TokenQuestion,
			hclsyntax.TokenDot:
			top.ops++
			depth++
		}
		if depth > MaxNesting {
			return hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Nesting too deep",
				Detail: fmt.Sprintf("The source nests more than %d levels deep here (brackets, blocks, quotes, "+
					"templates and chained operators all count). brine refuses it before parsing: "+
					"such depth exhausts the parser's stack. Split the expression, or use locals.", MaxNesting),
				Subject: tok.Range.Ptr()}}
		}
	}
	return nil
}

// nestingChars are the bytes at least one of which every token that adds to the depth below
// holds (an open bracket, quote, heredoc, interpolation or directive adds at most 2 levels).
var nestingChars = func() (t [256]bool) {
	for _, c := range []byte("{[(\"<$%!-+*/=>&|?.") {
		t[c] = true
	}
	return t
}()

// depthBound is a cheap upper bound of what checkNesting measures: twice the number of bytes
// that can start a nesting token. Lexing costs about as much as parsing; a file whose bound is
// under MaxNesting needs neither.
func depthBound(src []byte) int {
	n := 0
	for _, c := range src {
		if nestingChars[c] {
			n += 2
		}
	}
	return n
}

// parseConfig parses an HCL file once its nesting is known to be bounded.
func parseConfig(src []byte, filename string) (*hcl.File, hcl.Diagnostics) {
	if d := checkNesting(src, filename, false); d.HasErrors() {
		return nil, d
	}
	return hclsyntax.ParseConfig(src, filename, hcl.InitialPos)
}

// parseTemplate parses a template once its nesting is known to be bounded.
func parseTemplate(src []byte, filename string) (hclsyntax.Expression, hcl.Diagnostics) {
	if d := checkNesting(src, filename, true); d.HasErrors() {
		return nil, d
	}
	return hclsyntax.ParseTemplate(src, filename, hcl.InitialPos)
}

// parseExpression parses a --var value once its nesting is known to be bounded.
func parseExpression(src []byte, filename string) (hclsyntax.Expression, hcl.Diagnostics) {
	if d := checkNesting(src, filename, false); d.HasErrors() {
		return nil, d
	}
	return hclsyntax.ParseExpression(src, filename, hcl.InitialPos)
}

// CheckNesting reports, as a diagnostic naming file:line:col, HCL source nested deeper than
// MaxNesting: for the master's own HCL files (the secrets file), parsed outside a bundle.
func CheckNesting(src []byte, filename string) hcl.Diagnostics {
	return checkNesting(src, filename, false)
}
