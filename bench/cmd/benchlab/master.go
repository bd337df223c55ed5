package main

import (
	"fmt"
	"path/filepath"
	"time"
)

// masterFigure is the fan-out to every host through an OpenSSH
// ControlMaster already connected to each (ssh's ControlPath, as a user
// with ControlMaster auto and ControlPersist has them after a first ssh to
// each host): no connection, key exchange or login, only the sessions.
func (e *env) masterFigure(pp params) {
	n := len(e.hosts)
	f := &Figure{ID: "fanout_master", Section: "fanout", Unit: "ms",
		Title:  fmt.Sprintf("%d hosts, each with a ControlMaster already connected: `toworker run -o ControlPath=… -H h[1-%d] -- true`", n, n),
		Target: "reported"}
	defer e.add(f)
	for _, h := range e.hosts {
		_, stop, err := e.controlMaster(h)
		if err != nil {
			e.fail(f, "ssh -M "+h, err)
			return
		}
		defer stop()
	}
	// controlMaster's sockets are named by the host's alias: ssh's %n.
	controlPath := "ControlPath=" + filepath.Join(e.dir, "cm-%n")
	script := `s=0; pids=; for h in "$@"; do ssh -F "$0" -o "$CP" "$h" true & pids="$pids $!"; done; for p in $pids; do wait $p || s=1; done; exit $s`
	bash := variantFn{name: fmt.Sprintf("bash loop of %d `ssh -o ControlPath=… hN true &`, wait", n), role: "baseline", run: func() (float64, error) {
		d, err := e.run(2*time.Minute, []string{"CP=" + controlPath}, "bash", append([]string{"-c", script, e.cfg}, e.hosts...)...)
		return ms(d), err
	}}
	cli := variantFn{name: fmt.Sprintf("`toworker run -o ControlPath=… -H h[1-%d] -- true`", n), role: "toworker", skip: e.twNote, run: func() (float64, error) {
		d, err := e.cli(2*time.Minute, "run", "-H", hostRange(n), "-F", e.cfg, "-o", controlPath, "--", "true")
		return ms(d), err
	}}
	e.measure(f, pp.fanRounds, 2*pp.budget, false, bash, cli)
	f.addNote("Each host has its own `ssh -M` (ControlPersist no), started before the first sample. Through a master both sides pay only the session: sshd's session process and the login shell for ssh; those, the bootstrap's shell and stat, and the agent's start for toworker, whose `true` is then answered by the agent.")
}
