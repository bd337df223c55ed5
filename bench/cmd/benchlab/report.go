package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Machine records where the figures were measured.
type Machine struct {
	NProc     int    `json:"nproc"`
	CPU       string `json:"cpu,omitempty"`
	Kernel    string `json:"kernel,omitempty"`
	SSH       string `json:"ssh_version"`
	Go        string `json:"go_version"`
	GoRuntime string `json:"go_runtime"`
	Pdsh      string `json:"pdsh_version,omitempty"`
	Toworker  string `json:"toworker_cli,omitempty"`
}

// Step is one step of a path on the slow link, in round trips.
type Step struct {
	Path  string  `json:"path"`
	Step  string  `json:"step"`
	At    float64 `json:"at_rtt"`   // when the master's flight of this step left, in RTT since connect
	Cost  float64 `json:"cost_rtt"` // until the master's next flight (or the end)
	Bytes int     `json:"bytes"`    // bytes the master sent in the step's flight
}

// Report is everything one run of benchlab measured.
type Report struct {
	Date     string              `json:"date"`
	Mode     string              `json:"mode"`
	Machine  Machine             `json:"machine"`
	Hosts    int                 `json:"hosts"`
	RTTms    float64             `json:"slow_link_rtt_ms"`
	Figures  []*Figure           `json:"figures"`
	Steps    []Step              `json:"slow_link_steps,omitempty"`
	Flights  map[string][]Flight `json:"slow_link_flights,omitempty"`
	Notes    []string            `json:"notes,omitempty"`
	Errors   []string            `json:"errors,omitempty"`
	Duration float64             `json:"duration_s"`
}

var sections = []struct{ id, title string }{
	{"cold", "Cold start (agent cached unless said otherwise)"},
	{"calls", "Warm calls on one connected host"},
	{"throughput", "Throughput"},
	{"fanout", "Fan-out to many hosts"},
	{"resources", "Resources"},
	{"slow", "Slow link (relay with a fixed delay), in round trips"},
}

// Markdown renders the report.
func (r *Report) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# toworker benchmarks\n\n")
	fmt.Fprintf(&b, "%s, mode %s, %d sshd hosts on 127.0.1.x, slow link RTT %.0f ms; run took %.0f s.\n\n", r.Date, r.Mode, r.Hosts, r.RTTms, r.Duration)
	fmt.Fprintf(&b, "Machine: nproc %d (%s), kernel %s; %s; %s (benchlab built with %s).", r.Machine.NProc, r.Machine.CPU, r.Machine.Kernel, r.Machine.SSH, r.Machine.Go, r.Machine.GoRuntime)
	if r.Machine.Pdsh != "" {
		fmt.Fprintf(&b, " %s.", r.Machine.Pdsh)
	}
	b.WriteString("\n\n")
	b.WriteString("Times are milliseconds unless the unit says otherwise; MB = 10⁶ bytes. The ratio is toworker's median over OpenSSH's (the baseline row above it), measured in the same loop with the variants interleaved.\n\n")
	b.WriteString("| measurement | variant | n | min | median | max | toworker/ssh | target | result |\n")
	b.WriteString("|---|---|--:|--:|--:|--:|--:|---|---|\n")
	var notes []string
	for _, sec := range sections {
		first := true
		for _, f := range r.Figures {
			if f.Section != sec.id {
				continue
			}
			if first {
				fmt.Fprintf(&b, "| **%s** | | | | | | | | |\n", sec.title)
				first = false
			}
			title := f.Title
			if f.Unit != "ms" {
				title += " (" + f.Unit + ")"
			}
			if len(f.Variants) == 0 {
				fmt.Fprintf(&b, "| %s | — | | | | | | %s | %s |\n", title, f.Target, f.Result)
			}
			for i, v := range f.Variants {
				t := ""
				if i == 0 {
					t = title
				}
				n, mn, md, mx := "", "", "", ""
				if v.Stat != nil {
					n = fmt.Sprint(v.Stat.N)
					mn, md, mx = fmtVal(v.Stat.Min, f.Unit), fmtVal(v.Stat.Median, f.Unit), fmtVal(v.Stat.Max, f.Unit)
					if v.Stat.P99 != nil {
						md += " (p99 " + fmtVal(*v.Stat.P99, f.Unit) + ")"
					}
				} else if v.Note != "" {
					md = "— " + v.Note
				}
				ratio, target, result := "", "", ""
				if v.Role == "toworker" {
					if f.Ratio != nil {
						ratio = fmt.Sprintf("%.2f", *f.Ratio)
					}
					target, result = f.Target, resultMark(f.Result)
				}
				fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", t, v.Name, n, mn, md, mx, ratio, target, result)
			}
			if f.variant("toworker") == nil && len(f.Variants) > 0 {
				fmt.Fprintf(&b, "| | | | | | | | %s | %s |\n", f.Target, resultMark(f.Result))
			}
			if f.Note != "" {
				notes = append(notes, fmt.Sprintf("- **%s**: %s", f.Title, f.Note))
			}
		}
	}
	if len(r.Steps) > 0 {
		b.WriteString("\n## Round trips of each step on the slow link\n\n")
		b.WriteString("Counted from the relay's timestamps of the master's flights (a flight is what one side sends before the other answers). TCP's handshake is not simulated by the relay and is counted as 1 RTT. Step labels follow the order of messages of x/crypto/ssh's client and toworker's bootstrap; the bytes are what the master sent in that flight.\n\n")
		b.WriteString("| path | step | leaves at (RTT) | costs (RTT) | master bytes |\n|---|---|--:|--:|--:|\n")
		for _, s := range r.Steps {
			fmt.Fprintf(&b, "| %s | %s | %.2f | %.2f | %d |\n", s.Path, s.Step, s.At, s.Cost, s.Bytes)
		}
	}
	if len(notes) > 0 || len(r.Notes) > 0 {
		b.WriteString("\n## Notes\n\n")
		for _, n := range notes {
			b.WriteString(n + "\n")
		}
		for _, n := range r.Notes {
			b.WriteString("- " + n + "\n")
		}
	}
	if len(r.Errors) > 0 {
		b.WriteString("\n## Harness errors\n\n")
		for _, e := range r.Errors {
			b.WriteString("- " + e + "\n")
		}
	}
	return b.String()
}

func resultMark(s string) string {
	switch s {
	case "pass":
		return "✅ pass"
	case "miss":
		return "❌ miss"
	case "error":
		return "⚠️ error"
	}
	return s
}

// write writes latest.md, a dated copy and latest.json into dir.
func (r *Report) write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	md := r.Markdown()
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	stamp := time.Now().UTC().Format("2006-01-02T150405Z")
	if r.Mode == "smoke" {
		stamp += "-smoke"
	}
	for name, data := range map[string][]byte{
		"latest.md":   []byte(md),
		stamp + ".md": []byte(md),
		"latest.json": append(js, '\n'),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}
