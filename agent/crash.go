package agent

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"syscall"

	"github.com/toworker/toworker/internal/wire"
)

// How a worker that died during a job is reported: its exit status or
// signal, the runtime's crash output, and the first lines of a fatal error.

// exitError describes a worker that died during a job.
func exitError(state *os.ProcessState, crash []byte, header string) *wire.Error {
	if c := bytes.TrimLeft(crash, "\n"); len(c) == 0 || bytes.HasPrefix(c, []byte("panic: ")) || bytes.HasPrefix(c, []byte("fatal error: ")) {
		header = "" // the crash output has its own, or there is none
	}
	e := &wire.Error{Kind: wire.ErrKindExit, Stack: header + string(crash)}
	if state == nil {
		e.Message = "worker died"
		return e
	}
	ws, _ := state.Sys().(syscall.WaitStatus)
	switch {
	case ws.Signaled():
		e.Kind = wire.ErrKindSignal
		e.Signal = ws.Signal().String()
		e.Message = "worker killed by signal: " + ws.Signal().String()
	default:
		e.ExitCode = ws.ExitStatus()
		e.Message = fmt.Sprintf("worker exited with status %d during the job", ws.ExitStatus())
	}
	switch {
	case header != "":
		e.Message += ": " + strings.ReplaceAll(strings.TrimSpace(header), "\n", "; ")
	case len(crash) > 0:
		first, _, _ := strings.Cut(strings.TrimSpace(string(crash)), "\n")
		e.Message += ": " + first
	}
	return e
}

// crashScan finds, in a job's stderr, the lines a fatal runtime error
// prints before its crash output ("runtime: out of memory: …", "unexpected
// fault address …", "fatal error: …"). debug.SetCrashOutput leaves them out
// of the crash output (golang/go#76859), which then starts with a bare
// stack; header puts them back. It keeps a bounded amount.
type crashScan struct {
	partial []byte   // the current line, at most 512 bytes of it
	context []string // up to 3 "runtime: "/"unexpected " lines just seen
	header  string   // the last "fatal error: " line with its context
}

func (s *crashScan) write(p []byte) {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			i = len(p)
		}
		s.partial = append(s.partial, p[:min(i, 512-len(s.partial))]...)
		if i == len(p) {
			return
		}
		s.line(string(s.partial))
		s.partial = s.partial[:0]
		p = p[i+1:]
	}
}

func (s *crashScan) line(l string) {
	switch {
	case strings.HasPrefix(l, "fatal error: "):
		s.header = strings.Join(append(s.context, l), "\n") + "\n"
		s.context = nil
	case strings.HasPrefix(l, "runtime: ") || strings.HasPrefix(l, "unexpected "):
		if len(s.context) < 3 {
			s.context = append(s.context, l)
		}
	default:
		s.context = nil
	}
}
