package hostlist

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
)

// maxLine bounds the length of one line of a host file.
const maxLine = 1 << 20

// ReadFile reads a host file (pdsh's WCOLL / -w ^file format): one host
// or expression per line, '#' starts a comment that runs to the end of
// the line, surrounding whitespace and blank lines are ignored, and a
// leading UTF-8 byte order mark is skipped. It returns the expressions,
// unexpanded, in file order.
//
// Each expression is checked as Expand would check it, without being
// expanded; a syntax error is an *Error with Line set to the 1-based line
// number (its Expr and Pos refer to the line without its comment and
// surrounding whitespace). Read errors, and lines longer than 1 MiB, are also reported
// with their line number.
func ReadFile(r io.Reader) ([]string, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxLine)
	var exprs []string
	line := 0
	for sc.Scan() {
		line++
		s := sc.Text()
		if line == 1 {
			s = strings.TrimPrefix(s, "\uFEFF")
		}
		if i := strings.IndexByte(s, '#'); i >= 0 {
			s = s[:i]
		}
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if _, _, _, err := parse(s); err != nil {
			var e *Error
			if errors.As(err, &e) {
				e.Line = line
			}
			return nil, err
		}
		exprs = append(exprs, s)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("hostlist: line %d: line longer than %d bytes", line+1, maxLine)
		}
		return nil, fmt.Errorf("hostlist: reading line %d: %w", line+1, err)
	}
	return exprs, nil
}
