// Package hostlist expands and compresses host expressions in the syntax
// of pdsh(1) hostlists and ClusterShell's nodeset(1).
//
// An expression is a list of names separated by commas or whitespace;
// empty elements are ignored, so "web1,,web2" and " web1 , web2 " are
// both the two hosts web1 and web2 (the hostlist library in pdsh also
// treats spaces, tabs and commas alike). A name may contain any number of
// bracketed range lists, each expanded in place:
//
//	web[1-4]            web1 web2 web3 web4
//	web[01-10]          web01 … web10 (zero padding taken from the lower bound's width, as pdsh does)
//	web[1,3,5-7]        web1 web3 web5 web6 web7
//	node[1-10/2]        node1 node3 node5 node7 node9 (ClusterShell step)
//	rack[1-2]-node[1-2] rack1-node1 rack1-node2 rack2-node1 rack2-node2
//	foo[0-3]-eth0       foo0-eth0 … foo3-eth0
//
// Several brackets in one name give the cartesian product, the leftmost
// bracket varying slowest. Commas inside brackets belong to the range
// list, and whitespace around them is ignored ("web[1, 3]"). Ranges are
// numeric only: pdsh and nodeset have no letter ranges, so "[a-c]" is an
// error, as are empty brackets, reversed ranges, negative numbers,
// numbers of more than 18 digits, nested or unbalanced brackets, a zero
// step and ASCII control characters. Parse errors are *Error values that
// point at the offending byte.
//
// Everything else is part of a name and passes through unchanged. In
// particular '@' is not special: pdsh documents "user@host" targets, so
// "root@web[1-2]" expands to root@web1 and root@web2. Unlike pdsh, a
// "user@" prefix applies only to the name it is written on, not to the
// rest of the list. pdsh's "-host" (exclude), "^file" and "/regex/"
// forms, pdsh's "rcmd:" prefix and ClusterShell's "@group" node groups
// and set operators are not interpreted here; they are left to callers
// (a leading '-', '^', '/' or '@' is just part of a name).
//
// Expansion is bounded: an expression may expand to at most MaxHosts
// names, and to at most 128 MiB of name bytes. Both sizes are computed
// from the parsed expression before anything is expanded.
package hostlist

import (
	"fmt"
	"path"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxHosts is the largest number of names a single expression may expand
// to, counted before duplicates are removed. ExpandAll applies the same
// limit to all its include expressions together, and separately to all
// its exclude expressions together.
const MaxHosts = 1 << 20

const (
	// maxBytes bounds the total size of the names one expansion produces.
	maxBytes = 128 << 20
	// maxDigits bounds the length of a number inside brackets, leading
	// zeros included, so that every value fits in an int64 with room to
	// spare.
	maxDigits = 18
)

// Error is a parse error in a host expression. Pos is the 0-based byte
// offset in Expr of the offending character (len(Expr) when the
// expression ended too early). Line is the 1-based line number when the
// expression came from ReadFile, and 0 otherwise.
type Error struct {
	Expr string
	Pos  int
	Msg  string
	Line int
}

// Error returns a one-line message such as
//
//	hostlist: web[1-: unexpected end of expression at column 7
//
// where the column is 1-based and counted in characters. Use Caret for a
// two-line rendering that marks the column.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("hostlist: ")
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if isPrintable(e.Expr) {
		b.WriteString(e.Expr)
	} else {
		b.WriteString(strconv.Quote(e.Expr))
	}
	fmt.Fprintf(&b, ": %s at column %d", e.Msg, e.column())
	return b.String()
}

// Caret returns the expression followed by a second line with a caret
// under the offending column, for display under an error message:
//
//	web[1-
//	      ^
func (e *Error) Caret() string {
	var b strings.Builder
	b.WriteString(e.Expr)
	b.WriteByte('\n')
	for _, r := range e.Expr[:e.pos()] {
		if r == '\t' {
			b.WriteByte('\t')
		} else {
			b.WriteByte(' ')
		}
	}
	b.WriteByte('^')
	return b.String()
}

func (e *Error) pos() int { return min(max(e.Pos, 0), len(e.Expr)) }

func (e *Error) column() int { return utf8.RuneCountInString(e.Expr[:e.pos()]) + 1 }

func isPrintable(s string) bool {
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// Expand expands a host expression into host names, in order, with
// duplicates removed (the first occurrence is kept). See the package
// documentation for the syntax. An expression with no names (empty, or
// only separators) yields no names and no error.
func Expand(expr string) ([]string, error) {
	elems, count, size, err := parse(expr)
	if err != nil {
		return nil, err
	}
	return dedupe(generate(elems, count, size)), nil
}

// ExpandAll expands several expressions (for example repeated -H flags)
// into one list, in order and without duplicates, then removes every
// host matched by the exclude expressions (-x/--exclude).
//
// Exclude expressions are expanded like include expressions; each
// resulting pattern that contains '*', '?' or '\' is then a shell-style
// glob matched with path.Match ("web*", "rack[1-2]-*"), and any other
// pattern removes the host of exactly that name. Brackets in excludes are
// always ranges, never glob character classes.
func ExpandAll(include, exclude []string) ([]string, error) {
	hosts, err := expandMany(include)
	if err != nil {
		return nil, err
	}
	pats, err := expandMany(exclude)
	if err != nil {
		return nil, err
	}
	if len(pats) == 0 {
		return hosts, nil
	}
	exact := make(map[string]struct{}, len(pats))
	var globs []string
	for _, p := range pats {
		if !strings.ContainsAny(p, `*?\`) {
			exact[p] = struct{}{}
			continue
		}
		if _, err := path.Match(p, ""); err != nil {
			return nil, fmt.Errorf("hostlist: exclude pattern %q: %w", p, err)
		}
		globs = append(globs, p)
	}
	out := hosts[:0]
hosts:
	for _, h := range hosts {
		if _, ok := exact[h]; ok {
			continue
		}
		for _, g := range globs {
			if ok, _ := path.Match(g, h); ok {
				continue hosts
			}
		}
		out = append(out, h)
	}
	return out, nil
}

// expandMany expands exprs as if they were one comma-separated list.
func expandMany(exprs []string) ([]string, error) {
	var all []element
	count, size := 0, 0
	for _, expr := range exprs {
		elems, n, sz, err := parse(expr)
		if err != nil {
			return nil, err
		}
		if count+n > MaxHosts {
			return nil, &Error{Expr: expr, Msg: fmt.Sprintf("expressions together expand to more than %d hosts", MaxHosts)}
		}
		if size+sz > maxBytes {
			return nil, &Error{Expr: expr, Msg: fmt.Sprintf("expressions together expand to more than %d bytes of host names", maxBytes)}
		}
		count += n
		size += sz
		all = append(all, elems...)
	}
	return dedupe(generate(all, count, size)), nil
}

func dedupe(names []string) []string {
	if len(names) < 2 {
		return names
	}
	seen := make(map[string]struct{}, len(names))
	out := names[:0]
	for _, n := range names {
		if _, ok := seen[n]; ok {
			continue
		}
		seen[n] = struct{}{}
		out = append(out, n)
	}
	return out
}

// rng is one item of a bracket: lo-hi/step, printed zero-padded to width.
type rng struct {
	lo, hi, step uint64
	width        int
}

// size is the number of values in r.
func (r rng) size() uint64 { return (r.hi-r.lo)/r.step + 1 }

// digitBytes is the total length of all values of r once formatted.
func (r rng) digitBytes() int {
	total := 0
	lower, upper := uint64(0), uint64(9)
	for d := 1; d <= maxDigits && lower <= r.hi; d++ {
		// Values lo+k*step with exactly d natural digits lie in [lower, upper].
		a, b := max(lower, r.lo), min(upper, r.hi)
		if a <= b {
			kmin := (a - r.lo + r.step - 1) / r.step
			kmax := (b - r.lo) / r.step
			if kmin <= kmax {
				total += int(kmax-kmin+1) * max(d, r.width)
			}
		}
		lower, upper = upper+1, upper*10+9
	}
	return total
}

// part is a literal run of a name, or a bracket when ranges is non-nil.
type part struct {
	lit    string
	ranges []rng
	count  int // number of values in the bracket
	digits int // total bytes of the formatted values in the bracket
}

// element is one name of the top-level list, before expansion.
type element struct {
	parts []part
	count int // number of names
	size  int // total bytes of the names
}

type parser struct {
	expr string
	i    int
}

func (p *parser) errorf(pos int, format string, args ...any) *Error {
	return &Error{Expr: p.expr, Pos: pos, Msg: fmt.Sprintf(format, args...)}
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'
}

func isControl(c byte) bool { return c < 0x20 || c == 0x7f }

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// parse checks expr and computes how many names, and how many bytes of
// names, it expands to, without expanding it.
func parse(expr string) (elems []element, count, size int, err error) {
	p := &parser{expr: expr}
	for p.i < len(expr) {
		if c := expr[p.i]; c == ',' || isSpace(c) {
			p.i++
			continue
		}
		start := p.i
		el, err := p.element()
		if err != nil {
			return nil, 0, 0, err
		}
		if count+el.count > MaxHosts {
			return nil, 0, 0, p.errorf(start, "expression expands to more than %d hosts", MaxHosts)
		}
		if size+el.size > maxBytes {
			return nil, 0, 0, p.errorf(start, "expression expands to more than %d bytes of host names", maxBytes)
		}
		count += el.count
		size += el.size
		elems = append(elems, el)
	}
	return elems, count, size, nil
}

// element parses one name of the top-level list, up to the next
// separator outside brackets.
func (p *parser) element() (element, error) {
	start := p.i
	var el element
	lit, litBytes := p.i, 0
	flush := func() {
		if p.i > lit {
			el.parts = append(el.parts, part{lit: p.expr[lit:p.i]})
			litBytes += p.i - lit
		}
	}
	n := 1
loop:
	for p.i < len(p.expr) {
		c := p.expr[p.i]
		switch {
		case c == ',' || isSpace(c):
			break loop
		case c == '[':
			flush()
			open := p.i
			br, err := p.bracket()
			if err != nil {
				return element{}, err
			}
			// n and br.count are both at most MaxHosts: no overflow.
			if n*br.count > MaxHosts {
				return element{}, p.errorf(open, "expression expands to more than %d hosts", MaxHosts)
			}
			n *= br.count
			el.parts = append(el.parts, br)
			lit = p.i
		case c == ']':
			return element{}, p.errorf(p.i, "unbalanced ']' (no matching '[')")
		case isControl(c):
			return element{}, p.errorf(p.i, "invalid character %q", c)
		default:
			p.i++
		}
	}
	flush()
	tooBig := p.errorf(start, "expression expands to more than %d bytes of host names", maxBytes)
	if litBytes > maxBytes {
		return element{}, tooBig
	}
	size := n * litBytes
	for _, pt := range el.parts {
		if pt.ranges != nil {
			size += pt.digits * (n / pt.count)
			if size > maxBytes {
				return element{}, tooBig
			}
		}
	}
	if size > maxBytes {
		return element{}, tooBig
	}
	el.count, el.size = n, size
	return el, nil
}

func (p *parser) skipSpace() {
	for p.i < len(p.expr) && isSpace(p.expr[p.i]) {
		p.i++
	}
}

// bracket parses "[item,item,...]" with p.i at the '['.
func (p *parser) bracket() (part, error) {
	p.i++
	p.skipSpace()
	if p.i < len(p.expr) && p.expr[p.i] == ']' {
		return part{}, p.errorf(p.i, `empty range "[]"`)
	}
	var br part
	for {
		p.skipSpace()
		start := p.i
		r, err := p.item()
		if err != nil {
			return part{}, err
		}
		if n := r.size(); n > uint64(MaxHosts-br.count) {
			return part{}, p.errorf(start, "range expands to more than %d hosts", MaxHosts)
		}
		br.ranges = append(br.ranges, r)
		br.count += int(r.size())
		br.digits += r.digitBytes()
		p.skipSpace()
		if p.i >= len(p.expr) {
			return part{}, p.errorf(p.i, "unexpected end of expression")
		}
		switch p.expr[p.i] {
		case ',':
			p.i++
		case ']':
			p.i++
			return br, nil
		default:
			return part{}, p.unexpected(false)
		}
	}
}

// item parses "lo", "lo-hi" or "lo-hi/step".
func (p *parser) item() (rng, error) {
	start := p.i
	lo, width, err := p.number()
	if err != nil {
		return rng{}, err
	}
	r := rng{lo: lo, hi: lo, step: 1, width: width}
	isRange := false
	if p.i < len(p.expr) && p.expr[p.i] == '-' {
		p.i++
		isRange = true
		if r.hi, _, err = p.number(); err != nil {
			return rng{}, err
		}
		if r.hi < r.lo {
			return rng{}, p.errorf(start, "reversed range %s: %d is greater than %d", p.expr[start:p.i], r.lo, r.hi)
		}
	}
	if p.i < len(p.expr) && p.expr[p.i] == '/' {
		if !isRange {
			return rng{}, p.errorf(p.i, "step without a range (write lo-hi/step)")
		}
		p.i++
		at := p.i
		if r.step, _, err = p.number(); err != nil {
			return rng{}, err
		}
		if r.step == 0 {
			return rng{}, p.errorf(at, "step must be at least 1")
		}
	}
	return r, nil
}

// number parses a run of decimal digits and returns its value and length.
func (p *parser) number() (uint64, int, error) {
	start := p.i
	for p.i < len(p.expr) && isDigit(p.expr[p.i]) {
		p.i++
	}
	if p.i == start {
		return 0, 0, p.unexpected(true)
	}
	if p.i-start > maxDigits {
		return 0, 0, p.errorf(start, "number too large (at most %d digits)", maxDigits)
	}
	v, err := strconv.ParseUint(p.expr[start:p.i], 10, 64)
	if err != nil { // cannot happen with at most maxDigits digits
		return 0, 0, p.errorf(start, "bad number: %v", err)
	}
	return v, p.i - start, nil
}

// unexpected reports the character at p.i inside a bracket, where a
// number was expected (wantNumber) or else ',' or ']'.
func (p *parser) unexpected(wantNumber bool) *Error {
	if p.i >= len(p.expr) {
		return p.errorf(p.i, "unexpected end of expression")
	}
	c := p.expr[p.i]
	r, _ := utf8.DecodeRuneInString(p.expr[p.i:])
	switch {
	case c == '[':
		return p.errorf(p.i, "nested brackets are not supported")
	case wantNumber && c == '-':
		return p.errorf(p.i, "negative numbers are not allowed")
	case wantNumber && (c == ',' || c == ']'):
		return p.errorf(p.i, "empty range")
	case unicode.IsLetter(r):
		return p.errorf(p.i, "non-numeric range %q: ranges are numbers only (pdsh and nodeset do not support letters)", r)
	case isControl(c):
		return p.errorf(p.i, "invalid character %q", c)
	case wantNumber:
		return p.errorf(p.i, "unexpected %q in range, expected a number", r)
	default:
		return p.errorf(p.i, "unexpected %q in range, expected ',' or ']'", r)
	}
}

// pad formats v in decimal, zero-padded to width.
func pad(v uint64, width int) string {
	s := strconv.FormatUint(v, 10)
	if len(s) < width {
		s = strings.Repeat("0", width-len(s)) + s
	}
	return s
}

// generate expands parsed elements; count and size are their totals from
// parse. All names share one backing string.
func generate(elems []element, count, size int) []string {
	if count == 0 {
		return nil
	}
	var b strings.Builder
	b.Grow(size)
	ends := make([]int, 0, count)
	for _, el := range elems {
		vals := make([][]string, len(el.parts))
		for k, pt := range el.parts {
			if pt.ranges == nil {
				continue
			}
			vs := make([]string, 0, pt.count)
			for _, r := range pt.ranges {
				for v := r.lo; ; v += r.step {
					vs = append(vs, pad(v, r.width))
					if r.hi-v < r.step {
						break
					}
				}
			}
			vals[k] = vs
		}
		idx := make([]int, len(el.parts))
		for {
			for k, pt := range el.parts {
				if pt.ranges == nil {
					b.WriteString(pt.lit)
				} else {
					b.WriteString(vals[k][idx[k]])
				}
			}
			ends = append(ends, b.Len())
			k := len(el.parts) - 1
			for ; k >= 0; k-- {
				if vals[k] == nil {
					continue
				}
				idx[k]++
				if idx[k] < len(vals[k]) {
					break
				}
				idx[k] = 0
			}
			if k < 0 {
				break
			}
		}
	}
	s := b.String()
	names := make([]string, len(ends))
	start := 0
	for i, end := range ends {
		names[i] = s[start:end]
		start = end
	}
	return names
}
