// Command benchlab measures toworker side by side with OpenSSH on a lab of
// real sshd hosts on loopback, and writes the figures as Markdown and JSON.
//
//	go run ./bench/cmd/benchlab -out bench/results      # make bench
//	go run ./bench/cmd/benchlab -smoke -out /tmp/x      # make bench-smoke (CI)
//
// It is its own agent: it registers a no-op and an echo function and ships
// itself to the lab's hosts. Every process it starts (sshd listeners, ssh,
// pdsh, the toworker CLI, the relay's connections) is stopped before it
// exits, also on SIGINT. It exits non-zero only when the harness itself
// fails (a lab that does not start, a call that errors), never because a
// timing target is missed. See bench/README.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/toworker/toworker/agent"
	"github.com/toworker/toworker/internal/sshdtest"
)

func main() {
	agent.ServeIfAgent()
	os.Exit(run())
}

func run() int {
	var (
		smoke   = flag.Bool("smoke", false, "short run for CI: fewer hosts and rounds; finishes in well under a minute")
		out     = flag.String("out", "bench/results", "directory for latest.md, latest.json and a dated copy")
		hosts   = flag.Int("hosts", 0, "sshd hosts in the lab (default 32, smoke 10)")
		tw      = flag.String("toworker", "bin/toworker", "the toworker CLI to measure (empty: skip its rows)")
		rttFlag = flag.Duration("rtt", 40*time.Millisecond, "round-trip time of the slow link")
		prof    = flag.String("cpuprofile", "", "directory to write a CPU profile of each in-process measurement into")
		only    = flag.String("only", "", "comma-separated groups to run: cold,calls,throughput,fanout,fleet,slow (default all)")
		install = flag.Bool("install", true, "install pdsh with apt-get when missing (root only; not in smoke mode)")
		hold    = flag.Bool("hold", false, "start the lab, print how to reach it, and keep it until interrupted (for profiling by hand); measures nothing")
	)
	flag.Parse()
	pp := fullParams
	n := 32
	mode := "full"
	if *smoke {
		pp, n, mode = smokeParams, 10, "smoke"
	}
	if *hosts > 0 {
		n = *hosts
	}
	if n < 2 || n > 200 {
		fmt.Fprintln(os.Stderr, "benchlab: -hosts must be between 2 and 200")
		return 2
	}
	limit := 60 * time.Minute
	if *smoke {
		limit = 55 * time.Second
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	debug.SetGCPercent(100)

	start := time.Now()
	rep := &Report{Date: start.UTC().Format(time.RFC3339), Mode: mode, Hosts: n, RTTms: float64(*rttFlag) / float64(time.Millisecond)}
	code := 0
	if *hold {
		*only = "hold"
	}
	if err := bench(ctx, rep, pp, n, *rttFlag, *tw, *prof, *only, *install && !*smoke); err != nil {
		fmt.Fprintln(os.Stderr, "benchlab:", err)
		rep.Errors = append(rep.Errors, err.Error())
	}
	if ctx.Err() != nil {
		rep.Errors = append(rep.Errors, "stopped: "+context.Cause(ctx).Error())
	}
	rep.Duration = time.Since(start).Seconds()
	if *hold {
		// Nothing was measured: the results of the last run stay.
		if len(rep.Errors) > 0 && ctx.Err() == nil {
			return 1
		}
		return 0
	}
	if len(rep.Errors) > 0 {
		code = 1
	}
	fmt.Print(rep.Markdown())
	if err := rep.write(*out); err != nil {
		fmt.Fprintln(os.Stderr, "benchlab: write results:", err)
		code = 1
	} else {
		fmt.Fprintf(os.Stderr, "benchlab: wrote %s/latest.md and latest.json in %.0f s\n", *out, rep.Duration)
	}
	return code
}

func bench(ctx context.Context, rep *Report, pp params, n int, rtt time.Duration, tw, prof, only string, install bool) error {
	want := func(g string) bool {
		if only == "" {
			return true
		}
		for _, s := range strings.Split(only, ",") {
			if strings.TrimSpace(s) == g {
				return true
			}
		}
		return false
	}
	dir, err := os.MkdirTemp("", "benchlab")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	// No rc files: sshd runs no ~/.ssh/rc (the lab's PermitUserRC no), and
	// the login shell finds none either: Debian's bash sources ~/.bashrc
	// even for a command run by sshd (SSH_SOURCE_BASHRC), so sessions get
	// HOME pointing at an empty directory.
	home := filepath.Join(dir, "empty-home")
	if err := os.Mkdir(home, 0o755); err != nil {
		return err
	}
	lab, err := sshdtest.StartLab(sshdtest.LabOptions{Hosts: n, BaseIP: "127.0.1.", ExtraConfig: []string{"SetEnv HOME=" + home, "AcceptEnv LANG LC_*"}})
	if err != nil {
		return fmt.Errorf("start sshd lab: %w", err)
	}
	defer lab.Close()
	// The Go side reads the lab's files through our ssh_config; no agent.
	os.Setenv("HOME", lab.HomeDir)
	os.Unsetenv("SSH_AUTH_SOCK")

	e := &env{ctx: ctx, smoke: pp.coldRounds < fullParams.coldRounds, lab: lab, dir: dir, rtt: rtt, rep: rep, prof: prof, settle: 20 * time.Millisecond}
	if e.smoke {
		e.settle = 5 * time.Millisecond
	}
	for i := 1; i <= n; i++ {
		e.hosts = append(e.hosts, fmt.Sprintf("h%d", i))
	}
	if e.relay, err = newRelay(lab.Servers[0].Addr(), rtt); err != nil {
		return fmt.Errorf("start relay: %w", err)
	}
	defer e.relay.Close()
	if err := e.writeClientConfig(); err != nil {
		return err
	}
	if prof != "" {
		if err := os.MkdirAll(prof, 0o755); err != nil {
			return err
		}
	}
	if kex, err := e.resolveKex("h1"); err != nil {
		return fmt.Errorf("resolve h1: %w", err)
	} else if note := checkKexNote(kex); note != "" {
		rep.Notes = append(rep.Notes, note)
	} else {
		rep.Notes = append(rep.Notes, "Key exchange: the lab's sshd offers only curve25519-sha256, and both clients are pinned to it (ssh by the config's KexAlgorithms; the Go master resolves the same KexAlgorithms through internal/sshdial). No rc files run: sshd runs no ~/.ssh/rc (PermitUserRC no) and Debian has no /etc/ssh/sshrc; sessions get HOME set to an empty directory (sshd_config SetEnv), because Debian's bash sources ~/.bashrc even for commands run by sshd (on this machine root's ~/.bashrc costs about 100 ms, which would add to every ssh and toworker start alike). The lab's sshd has `AcceptEnv LANG LC_*`, the default sshd_config of Debian and Ubuntu: toworker's first frames travel with the exec in LC_TOWORKER and the agent starts on them without waiting for sshd to open the session's window (one round trip); `ssh` sends no variables here (no SendEnv in the lab's config).")
	}
	pdshNote := ""
	if want("fanout") {
		pdshNote = ensurePdsh(ctx, install)
	}
	e.probeCLI(tw)
	if e.twNote != "" {
		rep.Notes = append(rep.Notes, "toworker CLI rows skipped: "+e.twNote)
	}
	rep.Machine = machine(e)
	fmt.Fprintf(os.Stderr, "benchlab: %s mode, %d hosts; priming agent caches\n", rep.Mode, n)
	if err := e.prime(); err != nil {
		return err
	}
	if only == "hold" {
		fmt.Fprintf(os.Stderr, "benchlab: lab up with agents cached; until interrupted:\n  export HOME=%s\n  ssh -F %s h1 true\n  %s run -F %s -H h[1-%d] -- true\n", e.lab.HomeDir, e.cfg, e.tw, e.cfg, n)
		<-ctx.Done()
		return nil
	}
	steps := []struct {
		group string
		fn    func()
	}{
		{"cold", func() { e.coldFigures(pp) }},
		{"fleet", func() { e.fleetFigures(pp) }},
		{"calls", func() { e.callFigures(pp) }},
		{"throughput", func() { e.echoFigure(pp) }},
		{"fanout", func() { e.fanoutFigure(pp, pdshNote) }},
		{"fanout", func() {
			if !e.smoke {
				e.bigKnownHostsFigure(pp)
				e.jumpFigure(pp)
				e.sharedCacheFigure(pp)
				e.masterFigure(pp)
			}
		}},
		{"fleet", func() { e.uploadFigure(e.twPath(tw)) }},
		{"slow", func() { e.slowFigures(pp) }},
	}
	for _, s := range steps {
		if ctx.Err() != nil {
			break
		}
		if want(s.group) {
			s.fn()
		}
	}
	return nil
}

// twPath is the CLI binary's path when it exists (for its size), even if it
// could not be run.
func (e *env) twPath(tw string) string {
	if e.tw != "" {
		return e.tw
	}
	if st, err := os.Stat(tw); err == nil && !st.IsDir() {
		return tw
	}
	return ""
}
