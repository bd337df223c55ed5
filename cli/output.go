package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/toworker/toworker/internal/hostlist"
)

// Output modes.
const (
	modeStream = iota // "host: line" as lines arrive
	modeGroup         // per host, printed at the end, identical output grouped
	modeJSON          // JSON lines
)

const (
	streamOut = 0
	streamErr = 1
)

var streamNames = [2]string{"stdout", "stderr"}

// sink is where every line the command prints goes: host output, its own
// notes and the progress line. It serialises writes so that lines never
// interleave and the progress line is cleared before any other line.
type sink struct {
	mode     int
	noPrefix bool
	order    map[string]int // host → position on the command line

	mu     sync.Mutex // guards everything below and the writers
	w      [2]io.Writer
	prog   *progress    // nil without a progress line
	groups []*hostLines // modeGroup: per host (by order)
}

// hostLines is one host's collected output in group mode.
type hostLines struct {
	text [2]strings.Builder
}

func newSink(mode int, noPrefix bool, hosts []string, stdout, stderr io.Writer) *sink {
	s := &sink{mode: mode, noPrefix: noPrefix, w: [2]io.Writer{stdout, stderr}, order: make(map[string]int, len(hosts))}
	for i, h := range hosts {
		s.order[h] = i
	}
	if mode == modeGroup {
		s.groups = make([]*hostLines, len(hosts))
	}
	return s
}

// clearLocked erases the progress line, if shown. s.mu is held.
func (s *sink) clearLocked() {
	if s.prog != nil && s.prog.shown {
		io.WriteString(s.w[streamErr], "\r\x1b[K")
		s.prog.shown = false
	}
}

// writeLocked writes b to stream st after clearing the progress line.
func (s *sink) writeLocked(st int, b []byte) {
	s.clearLocked()
	s.w[st].Write(b)
}

// line handles one output line of host on stream st.
func (s *sink) line(host string, st int, line string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.mode {
	case modeGroup:
		i, ok := s.order[host]
		if !ok {
			return
		}
		if s.groups[i] == nil {
			s.groups[i] = &hostLines{}
		}
		b := &s.groups[i].text[st]
		b.WriteString(line)
		b.WriteByte('\n')
	case modeJSON:
		b, _ := json.Marshal(jsonLine{Host: host, Stream: streamNames[st], Line: line})
		s.writeLocked(streamOut, append(b, '\n'))
	default:
		var buf []byte
		if !s.noPrefix {
			buf = append(append(buf, host...), ": "...)
		}
		buf = append(append(buf, line...), '\n')
		s.writeLocked(st, buf)
	}
}

// note writes toworker's own message (a warning, the summary) to stderr.
func (s *sink) note(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if !strings.HasSuffix(msg, "\n") {
		msg += "\n"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writeLocked(streamErr, []byte(msg))
}

// Write lets the sink serve as an io.Writer for stderr messages (ssh
// warnings, log records); each call should be whole lines.
func (s *sink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writeLocked(streamErr, p)
	return len(p), nil
}

// jsonLine is an output line in --json mode.
type jsonLine struct {
	Host   string `json:"host"`
	Stream string `json:"stream"`
	Line   string `json:"line"`
}

// jsonRecord is the final record of a host in --json mode.
type jsonRecord struct {
	Host       string          `json:"host"`
	Status     string          `json:"status"`
	ExitCode   *int            `json:"exit_code"`
	DurationMS int64           `json:"duration_ms"`
	Error      string          `json:"error"`
	Result     json.RawMessage `json:"result,omitempty"`
	Files      *int            `json:"files,omitempty"`
	Bytes      *int64          `json:"bytes,omitempty"`
}

// hostDone records a host's outcome: its JSON record, the progress line.
func (s *sink) hostDone(o *outcome) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.prog != nil {
		s.prog.done++
		if o.status != statusOK {
			s.prog.failed++
		}
	}
	if s.mode != modeJSON {
		return
	}
	rec := jsonRecord{Host: o.host, Status: o.status, ExitCode: o.exitCode,
		DurationMS: o.duration.Milliseconds(), Error: o.reason, Result: o.result, Files: o.files, Bytes: o.bytes}
	b, _ := json.Marshal(rec)
	s.writeLocked(streamOut, append(b, '\n'))
}

// flushGroups prints the collected output of group mode, hosts with
// identical output together under a header naming them.
func (s *sink) flushGroups() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mode != modeGroup {
		return
	}
	hosts := make([]string, len(s.order))
	for h, i := range s.order {
		hosts[i] = h
	}
	for st := range 2 {
		type group struct {
			first int
			hosts []string
			text  string
		}
		byText := make(map[string]*group)
		var groups []*group
		for i, hl := range s.groups {
			if hl == nil || hl.text[st].Len() == 0 {
				continue
			}
			t := hl.text[st].String()
			g := byText[t]
			if g == nil {
				g = &group{first: i, text: t}
				byText[t] = g
				groups = append(groups, g)
			}
			g.hosts = append(g.hosts, hosts[i])
		}
		sort.SliceStable(groups, func(a, b int) bool { return groups[a].first < groups[b].first })
		for _, g := range groups {
			name := hostlist.Compress(g.hosts)
			bar := strings.Repeat("-", min(max(len(name)+len(fmt.Sprint(len(g.hosts)))+3, 15), 78))
			s.writeLocked(st, fmt.Appendf(nil, "%s\n%s (%d)\n%s\n%s", bar, name, len(g.hosts), bar, g.text))
		}
	}
}

// progress is the live status line on a terminal's stderr.
type progress struct {
	width                        int // the terminal's width; 0 if unknown
	total, done, failed, running int
	start                        time.Time
	shown                        bool
	stop                         chan struct{}
	stopped                      chan struct{}
}

// startProgress starts redrawing the progress line every interval, at
// most width-1 characters wide (when width > 0) so that it never wraps.
func (s *sink) startProgress(total, width int, interval time.Duration) {
	p := &progress{width: width, total: total, start: time.Now(), stop: make(chan struct{}), stopped: make(chan struct{})}
	s.mu.Lock()
	s.prog = p
	s.mu.Unlock()
	go func() {
		defer close(p.stopped)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				s.drawProgress()
			}
		}
	}()
}

func (s *sink) drawProgress() {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.prog
	if p == nil {
		return
	}
	line := fmt.Sprintf("[%d/%d] %d running, %d failed, %s", p.done, p.total, p.running, p.failed,
		time.Since(p.start).Round(100*time.Millisecond))
	if p.width > 1 && len(line) >= p.width {
		line = line[:p.width-1]
	}
	io.WriteString(s.w[streamErr], "\r\x1b[K"+line)
	p.shown = true
}

// setRunning updates the number of hosts at work, for the progress line.
func (s *sink) setRunning(n int) {
	s.mu.Lock()
	if s.prog != nil {
		s.prog.running = n
	}
	s.mu.Unlock()
}

// stopProgress stops and erases the progress line.
func (s *sink) stopProgress() {
	s.mu.Lock()
	p := s.prog
	s.mu.Unlock()
	if p == nil {
		return
	}
	close(p.stop)
	<-p.stopped
	s.mu.Lock()
	s.clearLocked()
	s.prog = nil
	s.mu.Unlock()
}
