package main

import (
	"fmt"
	"strings"
	"time"
)

// jumpFigure is the cold fan-out to every host but h1 through h1 as the
// jump host (ProxyJump), as to a fleet behind a bastion: ssh makes a
// connection to h1 for each host; toworker one for all.
func (e *env) jumpFigure(pp params) {
	targets := e.hosts[1:]
	n := len(targets)
	f := &Figure{ID: "fanout_jump", Section: "fanout", Unit: "ms",
		Title:  fmt.Sprintf("%d hosts behind one jump host (h1), cold: `toworker run -J h1 -H h[2-%d] -- true`", n, n+1),
		Target: "reported"}
	defer e.add(f)
	jump := e.lab.Server("h1")
	script := `s=0; pids=; for h in "$@"; do ssh -F "$0" -J h1 "$h" true & pids="$pids $!"; done; for p in $pids; do wait $p || s=1; done; exit $s`
	peak := map[string]int{}
	withPeak := func(v variantFn) variantFn {
		run := v.run
		v.run = func() (float64, error) {
			stop := make(chan struct{})
			done := make(chan int)
			go func() { // sample h1's connections while the fan-out runs
				most := 0
				for {
					most = max(most, jump.Connections())
					select {
					case <-stop:
						done <- most
						return
					case <-time.After(5 * time.Millisecond):
					}
				}
			}()
			x, err := run()
			close(stop)
			peak[v.name] = max(peak[v.name], <-done)
			return x, err
		}
		return v
	}
	bash := withPeak(variantFn{name: fmt.Sprintf("bash loop of %d `ssh -J h1 hN true &`, wait", n), role: "baseline", run: func() (float64, error) {
		d, err := e.run(2*time.Minute, nil, "bash", append([]string{"-c", script, e.cfg}, targets...)...)
		return ms(d), err
	}})
	cli := withPeak(variantFn{name: fmt.Sprintf("`toworker run -J h1 -H h[2-%d] -- true`", n+1), role: "toworker", skip: e.twNote, run: func() (float64, error) {
		d, err := e.cli(2*time.Minute, "run", "-J", "h1", "-H", fmt.Sprintf("h[2-%d]", n+1), "-F", e.cfg, "--", "true")
		return ms(d), err
	}})
	e.measure(f, pp.fanRounds, 2*pp.budget, false, bash, cli)
	var parts []string
	for _, v := range []variantFn{bash, cli} {
		if m, ok := peak[v.name]; ok {
			parts = append(parts, fmt.Sprintf("%s %d", v.name, m))
		}
	}
	if len(parts) > 0 {
		f.addNote(fmt.Sprintf("Most connections h1's sshd handled at once (sampled every 5 ms): %s. The lab's sshd allows MaxStartups 200; a bastion with OpenSSH's default 10:30:100 drops a share of unauthenticated connections beyond ten.", strings.Join(parts, "; ")))
	}
}
