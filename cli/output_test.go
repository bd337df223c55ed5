package cli

import (
	"io"
	"strings"
	"testing"
	"time"
)

// screen renders what a terminal shows for a byte stream with \r, \n and
// the erase-line sequence ESC [ K, and returns the finished lines and the
// line still being drawn.
func screen(s string) (done []string, current string) {
	var line []rune
	col := 0
	for i := 0; i < len(s); {
		switch {
		case strings.HasPrefix(s[i:], "\x1b[K"):
			line = line[:col]
			i += 3
			continue
		case s[i] == '\r':
			col = 0
		case s[i] == '\n':
			done = append(done, string(line))
			line, col = nil, 0
		default:
			if col < len(line) {
				line[col] = rune(s[i])
			} else {
				line = append(line, rune(s[i]))
			}
			col++
		}
		i++
	}
	return done, string(line)
}

func TestProgressLineNeverMixesWithOutput(t *testing.T) {
	old := isTerminal
	isTerminal = func(io.Writer) bool { return true }
	t.Cleanup(func() { isTerminal = old })

	// stdout and stderr are the same terminal.
	var term lockedBuf
	r := cliTo(t, t.Context(), nil, &term, &term, "run", "-H", "h[1-3]", "--", "echo a; sleep 0.6; echo b >&2; sleep 0.3; echo c")
	if r.code != 0 {
		t.Fatalf("exit %d:\n%q", r.code, term.String())
	}
	if !strings.Contains(term.String(), "running, 0 failed") {
		t.Errorf("no progress line drawn:\n%q", term.String())
	}
	done, current := screen(term.String())
	if current != "" {
		t.Errorf("progress line left on the screen: %q", current)
	}
	var out []string
	for _, l := range done {
		if strings.Contains(l, "running,") {
			t.Errorf("progress mixed into an output line: %q", l)
		}
		if !strings.HasPrefix(l, "toworker run:") {
			out = append(out, l)
		}
	}
	if len(out) != 9 {
		t.Errorf("lines on screen: %q", done)
	}

	// No progress line with --json, or when stderr is not a terminal.
	term = lockedBuf{}
	r = cliTo(t, t.Context(), nil, &term, &term, "run", "--json", "-H", "h1", "--", "sleep 0.5")
	if strings.Contains(term.String(), "\r") {
		t.Errorf("progress line with --json: %q", term.String())
	}
	isTerminal = old
	term = lockedBuf{}
	r = cliTo(t, t.Context(), nil, &term, &term, "run", "-H", "h1", "--", "sleep 0.5")
	if strings.Contains(term.String(), "\r") {
		t.Errorf("progress line without a terminal: %q", term.String())
	}
}

func TestSinkGroupsAndPrefixes(t *testing.T) {
	var out, errb lockedBuf
	s := newSink(modeGroup, false, []string{"b1", "a1", "a2"}, &out, &errb)
	s.line("a2", streamOut, "x")
	s.line("a1", streamOut, "x")
	s.line("b1", streamOut, "y")
	s.line("b1", streamErr, "e")
	s.line("zz", streamOut, "not a host of the run")
	s.flushGroups()
	want := "---------------\nb1 (1)\n---------------\ny\n---------------\na[1-2] (2)\n---------------\nx\n"
	if out.String() != want {
		t.Errorf("groups:\n%s\nwant:\n%s", out.String(), want)
	}
	if errb.String() != "---------------\nb1 (1)\n---------------\ne\n" {
		t.Errorf("stderr groups:\n%s", errb.String())
	}

	out, errb = lockedBuf{}, lockedBuf{}
	s = newSink(modeStream, false, []string{"h"}, &out, &errb)
	s.startProgress(1, 12, time.Hour)
	s.drawProgress()
	s.line("h", streamOut, "l")
	s.stopProgress()
	if out.String() != "h: l\n" || errb.String() != "\r\x1b[K[0/1] 0 run\r\x1b[K" {
		t.Errorf("stdout %q stderr %q", out.String(), errb.String())
	}
}
