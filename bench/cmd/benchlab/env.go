package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/toworker/toworker/internal/sshdtest"
)

// env is one run's lab and settings.
type env struct {
	ctx    context.Context
	smoke  bool
	lab    *sshdtest.Lab
	dir    string   // benchlab's own temp dir: ssh_config, known_hosts, control sockets
	cfg    string   // ssh_config: the lab's hosts plus slow1
	hosts  []string // h1 … hN
	tw     string   // the toworker CLI, "" when it cannot be used
	twNote string   // why not
	rtt    time.Duration
	relay  *relay
	rep    *Report
	prof   string // directory for CPU profiles, or ""
	settle time.Duration

	lastChildCPU float64 // CPU seconds of the last command run (with its waited-for children)
	lastOutput   string  // the last 4 KiB the last command run printed
}

// slowHost is the ssh_config alias of h1 behind the delaying relay.
const slowHost = "slow1"

// writeClientConfig writes the lab's client config plus a slow1 block that
// reaches h1 through the relay, and a known_hosts file that verifies h1's
// key under slow1's HostKeyAlias.
func (e *env) writeClientConfig() error {
	base, err := os.ReadFile(e.lab.ConfigFile)
	if err != nil {
		return err
	}
	kh, err := os.ReadFile(e.lab.KnownHostsFile)
	if err != nil {
		return err
	}
	h1 := e.lab.Servers[0]
	const alias = "slow1-h1"
	known := filepath.Join(e.dir, "known_hosts")
	var k bytes.Buffer
	k.Write(kh)
	// A HostKeyAlias is looked up bare, by OpenSSH and internal/sshdial.
	fmt.Fprintln(&k, knownhosts.Line([]string{alias}, h1.HostKey))
	if err := os.WriteFile(known, k.Bytes(), 0o644); err != nil {
		return err
	}
	var c bytes.Buffer
	c.Write(base)
	fmt.Fprintf(&c, "\n# benchlab: h1 behind a relay adding %v of round-trip time\n", e.rtt)
	fmt.Fprintf(&c, "Host %s\n  HostName 127.0.0.1\n  Port %d\n  HostKeyAlias %s\n  User %s\n", slowHost, e.relay.port(), alias, h1.User)
	fmt.Fprintf(&c, "  IdentityFile %s\n  IdentitiesOnly yes\n  UserKnownHostsFile %s\n  GlobalKnownHostsFile /dev/null\n", e.lab.IdentityFile, known)
	fmt.Fprintf(&c, "  StrictHostKeyChecking yes\n  KexAlgorithms curve25519-sha256\n  BatchMode yes\n")
	e.cfg = filepath.Join(e.dir, "ssh_config")
	e.rep.Notes = append(e.rep.Notes, fmt.Sprintf("Slow link: `%s` is h1 behind benchlab's relay (127.0.0.1:%d, %v added to each round trip); its host key is checked under HostKeyAlias %s, as one known_hosts line for both clients.", slowHost, e.relay.port(), e.rtt, alias))
	return os.WriteFile(e.cfg, c.Bytes(), 0o644)
}

// command returns a command in a process group of its own, killed (the
// whole group, by its pid) when ctx ends.
func command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	return cmd
}

// run runs a command to completion within limit and returns its wall time.
// stdin is /dev/null; output is kept for the error message only.
func (e *env) run(limit time.Duration, env []string, name string, args ...string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(e.ctx, limit)
	defer cancel()
	cmd := command(ctx, name, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	var out tail
	cmd.Stdout, cmd.Stderr = &out, &out
	t0 := time.Now()
	err := cmd.Run()
	d := time.Since(t0)
	e.lastOutput = out.String()
	if ps := cmd.ProcessState; ps != nil {
		// The command's CPU and that of the children it waited for.
		e.lastChildCPU = (ps.UserTime() + ps.SystemTime()).Seconds()
	}
	if err != nil {
		if ctx.Err() != nil && e.ctx.Err() == nil {
			err = fmt.Errorf("timed out after %v", limit)
		}
		return d, fmt.Errorf("%s %s: %w: %s", filepath.Base(name), strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return d, nil
}

// ssh runs OpenSSH's ssh with our config.
func (e *env) ssh(args ...string) (time.Duration, error) {
	return e.run(30*time.Second, nil, "ssh", append([]string{"-F", e.cfg}, args...)...)
}

// cli runs the toworker CLI.
func (e *env) cli(limit time.Duration, args ...string) (time.Duration, error) {
	return e.run(limit, nil, e.tw, args...)
}

// tail keeps the last 4 KiB written to it.
type tail struct{ b []byte }

func (t *tail) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 4096 {
		t.b = t.b[len(t.b)-4096:]
	}
	return len(p), nil
}
func (t *tail) String() string { return string(t.b) }

// probeCLI decides whether the toworker CLI can be measured.
func (e *env) probeCLI(path string) {
	if path == "" {
		e.twNote = "disabled with -toworker ''"
		return
	}
	abs, err := filepath.Abs(path)
	if err == nil {
		path = abs
	}
	if st, err := os.Stat(path); err != nil || st.IsDir() {
		e.twNote = fmt.Sprintf("%s does not exist yet (make build builds it from ./cmd/toworker)", path)
		return
	}
	e.tw = path
	if _, err := e.cli(60*time.Second, "run", "-H", "h1", "-F", e.cfg, "--", "true"); err != nil {
		e.tw = ""
		e.twNote = fmt.Sprintf("`%s run -H h1 -F cfg -- true` does not work yet: %v", path, err)
	}
}

// machine describes this machine.
func machine(e *env) Machine {
	m := Machine{NProc: runtime.NumCPU(), GoRuntime: runtime.Version()}
	if out, err := exec.Command("nproc").Output(); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(out))); err == nil {
			m.NProc = n
		}
	}
	if out, err := exec.Command("ssh", "-V").CombinedOutput(); err == nil {
		m.SSH = strings.TrimSpace(string(out))
	}
	if out, err := exec.Command("go", "version").Output(); err == nil {
		m.Go = strings.TrimSpace(string(out))
	} else {
		m.Go = runtime.Version()
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if out, err := exec.Command("pdsh", "-V").CombinedOutput(); err == nil {
		m.Pdsh = strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	}
	if e.tw != "" {
		m.Toworker = e.tw
	}
	return m
}

// ensurePdsh installs pdsh with apt-get when it is missing and we may.
func ensurePdsh(ctx context.Context, allowInstall bool) string {
	if _, err := exec.LookPath("pdsh"); err == nil {
		return ""
	}
	if !allowInstall || os.Geteuid() != 0 {
		return "pdsh is not installed (apt-get install -y pdsh); its row is skipped"
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		return "pdsh is not installed and there is no apt-get; its row is skipped"
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	install := func() error {
		cmd := command(ctx, "apt-get", "install", "-y", "-qq", "pdsh")
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, lastLine(out))
		}
		return nil
	}
	if err := install(); err != nil {
		up := command(ctx, "apt-get", "update", "-qq")
		up.Run()
		if err := install(); err != nil {
			return fmt.Sprintf("pdsh is not installed and apt-get install -y pdsh failed (%v); its row is skipped", err)
		}
	}
	return ""
}

func lastLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}

// gzipSize is the size of path compressed as toworker uploads it (gzip -1).
func gzipSize(path string) (raw, gz int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	var cnt countWriter
	zw, _ := gzip.NewWriterLevel(&cnt, gzip.BestSpeed)
	raw, err = io.Copy(zw, f)
	if err != nil {
		return 0, 0, err
	}
	if err := zw.Close(); err != nil {
		return 0, 0, err
	}
	return raw, cnt.n, nil
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// agentProcs returns the pids and VmRSS (KiB) of the agent processes of role
// ("boss" or "worker") that run from this lab's agent caches: processes
// whose command line ends in "--toworker-agent <role>" and whose executable
// lies under the lab's directory, so nothing but what the lab started.
func (e *env) agentProcs(role string) (pids []int, rssKiB []float64) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, nil
	}
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + ent.Name() + "/cmdline")
		if err != nil || len(b) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if len(args) < 3 || args[len(args)-2] != "--toworker-agent" || args[len(args)-1] != role {
			continue
		}
		if !strings.HasPrefix(args[0], e.lab.Dir+string(os.PathSeparator)) {
			continue
		}
		st, err := os.ReadFile("/proc/" + ent.Name() + "/status")
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(st), "\n") {
			if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
				f := strings.Fields(v)
				if len(f) > 0 {
					if kb, err := strconv.ParseFloat(f[0], 64); err == nil {
						pids = append(pids, pid)
						rssKiB = append(rssKiB, kb)
					}
				}
			}
		}
	}
	return pids, rssKiB
}

// checkKex verifies that the Go side negotiates what the config pins: it
// resolves h1 as internal/sshdial does and reports its KexAlgorithms.
func checkKexNote(kex []string) string {
	if len(kex) == 1 && kex[0] == "curve25519-sha256" {
		return ""
	}
	return fmt.Sprintf("internal/sshdial resolved KexAlgorithms %v for h1, not [curve25519-sha256]: the Go side does not use the lab's pinned key exchange", kex)
}

// cpuSnap is CPU time (user + system, seconds) by kind of process: the
// master (this process), the lab's sshd processes, the agents' bosses and
// workers.
type cpuSnap map[string]float64

var cpuKinds = []string{"master", "sshd", "boss", "worker"}

// cpuSnapshot reads the CPU time of this process and of every process the
// lab started, from /proc.
func (e *env) cpuSnapshot() cpuSnap {
	snap := cpuSnap{}
	listeners := map[int]bool{}
	for _, s := range e.lab.Servers {
		listeners[s.PID()] = true
	}
	type proc struct {
		ppid int
		cpu  float64
		kind string
	}
	procs := map[int]*proc{}
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + ent.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 13 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		ut, _ := strconv.ParseFloat(f[11], 64)
		st, _ := strconv.ParseFloat(f[12], 64)
		p := &proc{ppid: ppid, cpu: (ut + st) / clockTicks}
		if cl, err := os.ReadFile("/proc/" + ent.Name() + "/cmdline"); err == nil {
			args := strings.Split(strings.TrimRight(string(cl), "\x00"), "\x00")
			if n := len(args); n >= 3 && args[n-2] == "--toworker-agent" && strings.HasPrefix(args[0], e.lab.Dir+"/") {
				p.kind = args[n-1]
			}
		}
		procs[pid] = p
	}
	self := os.Getpid()
	for pid, p := range procs {
		kind := p.kind
		if pid == self {
			kind = "master"
		}
		if kind == "" {
			// An sshd of the lab: the listener or one of its descendants
			// that is not an agent.
			for a, hops := pid, 0; a > 1 && hops < 8; hops++ {
				if listeners[a] {
					kind = "sshd"
					break
				}
				q := procs[a]
				if q == nil {
					break
				}
				a = q.ppid
			}
		}
		if kind != "" {
			snap[kind] += p.cpu
		}
	}
	return snap
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times (100 on Linux).
const clockTicks = 100

// perCall returns the CPU microseconds per call of each kind between two
// snapshots, and a sentence for the notes.
func perCall(a, b cpuSnap, calls int) (map[string]float64, string) {
	out := map[string]float64{}
	var parts []string
	total := 0.0
	for _, k := range cpuKinds {
		v := (b[k] - a[k]) / float64(calls) * 1e6
		if v < 0 {
			v = 0
		}
		out[k] = v
		total += v
		parts = append(parts, fmt.Sprintf("%s %.0f", k, v))
	}
	out["total"] = total
	return out, fmt.Sprintf("CPU per call (µs, /proc): %s; total %.0f µs, so %d cores allow about %.0f calls/s.", strings.Join(parts, ", "), total, runtime.NumCPU(), float64(runtime.NumCPU())*1e6/max(total, 1))
}

// hostCPU is the CPU time, in seconds, of everything the lab's sshd
// listeners ran and reaped: the per-connection sshd processes, the login
// shells and commands, and the agents, once they have exited (their times
// add up into the listener's cutime and cstime).
func (e *env) hostCPU() float64 {
	total := 0.0
	for _, s := range e.lab.Servers {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.PID()))
		if err != nil {
			continue
		}
		str := string(b)
		i := strings.LastIndexByte(str, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(str[i+1:])
		if len(f) < 15 {
			continue
		}
		for _, x := range f[11:15] { // utime stime cutime cstime
			v, _ := strconv.ParseFloat(x, 64)
			total += v / clockTicks
		}
	}
	return total
}

// machineCPU is the whole machine's busy CPU time in seconds (/proc/stat:
// all but idle and iowait), whoever spent it: it also counts processes
// that outlive their parents and kernel work.
func machineCPU() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0
	}
	total := 0.0
	for i, x := range f[1:] {
		if i == 3 || i == 4 || i >= 8 { // idle, iowait; guest time is in user
			continue
		}
		v, _ := strconv.ParseFloat(x, 64)
		total += v
	}
	return total / clockTicks
}

// selfCPU is this process's CPU time in seconds.
func selfCPU() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}
