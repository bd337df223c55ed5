package main

import "fmt"

// steps turns the flights of one connection into a step table: one row per
// flight of the master (client), costed until its next flight. TCP's
// handshake, which the relay does not delay, is the first row at 1 RTT and
// shifts every later time by 1.
func steps(path string, fs []Flight, toworker bool) []Step {
	out := []Step{{Path: path, Step: "TCP handshake (not simulated)", At: 0, Cost: 1}}
	var ups []Flight
	for _, f := range fs {
		if f.Up {
			ups = append(ups, f)
		}
	}
	end := 0.0
	if n := len(fs); n > 0 {
		end = fs[n-1].End
	}
	for i, f := range ups {
		next := end
		if i+1 < len(ups) {
			next = ups[i+1].At
		}
		out = append(out, Step{Path: path, Step: fmt.Sprintf("master flight %d", i+1), At: f.At + 1, Cost: next - f.At, Bytes: f.Bytes})
	}
	return out
}
