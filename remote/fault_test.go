package remote_test

// Faults, hostile input and security (issue 8). Each test here proves one
// promise of SECURITY.md and fails if the promise breaks: nothing lost
// (every job has exactly one outcome, retried jobs run again elsewhere),
// nothing left behind (the process table on the host is checked, not the
// code), nothing let in (hostile frames from a malicious host are a clean
// connection error with bounded allocation; a host cannot make the master
// run anything but the job's own callbacks).
//
// Faults a real sshd cannot produce come from internal/faultssh (an
// in-process SSH server) and from tcpRelay, a TCP relay in this file that
// can reset or silently black-hole a connection.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"runtime/debug"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
	"golang.org/x/sys/unix"

	"github.com/toworker/toworker/agent"
	"github.com/toworker/toworker/callback"
	"github.com/toworker/toworker/internal/faultssh"
	"github.com/toworker/toworker/internal/sshdial"
	"github.com/toworker/toworker/internal/sshdtest"
	"github.com/toworker/toworker/internal/wire"
	"github.com/toworker/toworker/remote"
)

// ---------------------------------------------------------------------------
// Functions the fault tests run on the hosts.

// FaultSleep starts `sleep seconds` and prints "host <host> pids <worker>
// <sleep>", then waits for it.
var FaultSleep = agent.Register("fault.sleep", func(ctx context.Context, seconds int) (int, error) {
	cmd := exec.Command("sleep", strconv.Itoa(seconds))
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	fmt.Printf("host %s pids %d %d\n", callback.Host(ctx), os.Getpid(), cmd.Process.Pid)
	cmd.Wait()
	return seconds, nil
})

// FaultFlood starts `yes` writing long lines on the job's stdout without
// end, prints "host <host> pids <worker> <yes>", and waits for it.
var FaultFlood = agent.Register("fault.flood", func(ctx context.Context, _ struct{}) (int, error) {
	cmd := exec.Command("yes", strings.Repeat("flood", 200))
	cmd.Stdout = os.Stdout
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	fmt.Printf("host %s pids %d %d\n", callback.Host(ctx), os.Getpid(), cmd.Process.Pid)
	cmd.Wait()
	return 0, nil
})

// FaultCrash takes its worker down in the way named by how.
var FaultCrash = agent.Register("fault.crash", func(ctx context.Context, how string) (int, error) {
	switch how {
	case "goroutine-panic":
		// Not recoverable by the function: the runtime crashes the worker.
		go func() { panic("boom in a goroutine the job started") }()
	case "exit-3":
		fmt.Println("exiting with status 3")
		os.Exit(3)
	case "nil-deref":
		// A nil pointer read through unsafe code: the runtime turns the
		// fault into a panic in the function's goroutine.
		return *(*int)(unsafe.Pointer(nil)), nil
	case "bad-address":
		// A read of a mapped but inaccessible page: an "unexpected fault
		// address" that no recover can catch.
		page, err := unix.Mmap(-1, 0, os.Getpagesize(), unix.PROT_READ, unix.MAP_ANON|unix.MAP_PRIVATE)
		if err != nil {
			return 0, err
		}
		unix.Mprotect(page, unix.PROT_NONE)
		return int(page[0]), nil
	case "kill-segv":
		syscall.Kill(os.Getpid(), syscall.SIGSEGV)
	case "segv-traceback-crash":
		// GOTRACEBACK=crash: the runtime prints the trace, then dies of a
		// signal instead of exiting.
		debug.SetTraceback("crash")
		syscall.Kill(os.Getpid(), syscall.SIGSEGV)
	case "oom":
		// Out of memory under a ulimit: cap the address space a little
		// above what the worker maps now, then allocate past it.
		lim := vmSize() + 256<<20
		if err := unix.Setrlimit(unix.RLIMIT_AS, &unix.Rlimit{Cur: lim, Max: lim}); err != nil {
			return 0, err
		}
		var keep [][]byte
		for range 64 {
			b := make([]byte, 64<<20)
			for i := 0; i < len(b); i += 4096 {
				b[i] = 1
			}
			keep = append(keep, b)
		}
		return len(keep), nil
	case "sigkill":
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
	default:
		return 0, fmt.Errorf("no crash named %q", how)
	}
	time.Sleep(time.Minute)
	return 0, errors.New("still alive")
})

// vmSize is this process's virtual memory size from /proc.
func vmSize() uint64 {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		var kb uint64
		if n, _ := fmt.Sscanf(l, "VmSize: %d kB", &kb); n == 1 {
			return kb << 10
		}
	}
	return 1 << 30
}

// FaultSteady prints "tick i" and asks the master's "more" callback whether
// to go on, until it says no; it returns the number of ticks.
var FaultSteady = agent.Register("fault.steady", func(ctx context.Context, _ struct{}) (int, error) {
	for i := 0; ; i++ {
		fmt.Printf("tick %d\n", i)
		var more bool
		if err := callback.Call(ctx, "more", i, &more); err != nil {
			return i, err
		}
		if !more {
			return i + 1, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
})

// LinesIn asks FaultLines for N lines, one write each, PauseMicros apart,
// then Callbacks calls of the "ping" callback.
type LinesIn struct{ N, PauseMicros, Callbacks int }

var FaultLines = agent.Register("fault.lines", func(ctx context.Context, in LinesIn) (int, error) {
	for i := range in.N {
		fmt.Printf("line %d\n", i)
		if in.PauseMicros > 0 {
			time.Sleep(time.Duration(in.PauseMicros) * time.Microsecond)
		}
	}
	for i := range in.Callbacks {
		var s string
		if err := callback.Call(ctx, "ping", i, &s); err != nil {
			return 0, err
		}
	}
	return in.N, nil
})

// FaultEscape starts two sleeps: one in the worker's process group, one in
// a session of its own (setsid), prints "pids <worker> <in-group>
// <escaped>" and waits.
var FaultEscape = agent.Register("fault.escape", func(ctx context.Context, _ struct{}) (int, error) {
	in := exec.Command("sleep", "300")
	if err := in.Start(); err != nil {
		return 0, err
	}
	out := exec.Command("sleep", "301")
	out.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := out.Start(); err != nil {
		return 0, err
	}
	fmt.Printf("pids %d %d %d\n", os.Getpid(), in.Process.Pid, out.Process.Pid)
	in.Wait()
	return 0, nil
})

// WorkIn is one job of the load test: Mode 0 squares N, 1 kills its own
// worker with SIGKILL, 2 returns an error.
type WorkIn struct{ N, Mode int }

var FaultWork = agent.Register("fault.work", func(ctx context.Context, in WorkIn) (int, error) {
	switch in.Mode {
	case 1:
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		time.Sleep(time.Minute)
	case 2:
		return 0, fmt.Errorf("job %d fails on purpose", in.N)
	}
	return in.N * in.N, nil
})

// SecretIn carries a secret in a job's data.
type SecretIn struct{ Secret string }

// FaultSecret prints its secret once (its own output, which the caller
// asked for), logs at every level without it, and hands it to a callback.
var FaultSecret = agent.Register("fault.secret", func(ctx context.Context, in SecretIn) (int, error) {
	fmt.Println("own output:", in.Secret)
	lg := callback.Logger(ctx)
	lg.Debug("debug record", "len", len(in.Secret))
	lg.Info("info record")
	lg.Warn("warn record")
	lg.Error("error record")
	var ack string
	if err := callback.Call(ctx, "seen", in.Secret, &ack); err != nil {
		return 0, err
	}
	return len(in.Secret), nil
})

// CbIn asks FaultCallback to call the callback Name with Send and decode
// the reply into struct{ N int }.
type CbIn struct {
	Name string
	Send int
}

var FaultCallback = agent.Register("fault.callback", func(ctx context.Context, in CbIn) (int, error) {
	var out struct{ N int }
	err := callback.Call(ctx, in.Name, in.Send, &out)
	var ce *callback.Error
	if errors.As(err, &ce) {
		return 0, fmt.Errorf("callback error of kind %s: %w", ce.Kind, err)
	}
	if err != nil {
		return 0, err
	}
	return out.N, nil
})

// ---------------------------------------------------------------------------
// The master helper for TestFaultMasterKilledSeveralHosts: the test binary
// started again with TOWORKER_FAULT_MASTER=h1,h2,… runs two sleeping jobs on
// each of those hosts, prints each job's "host … pids …" line, and waits to
// be killed. (TestMain's own helper, TOWORKER_TEST_MASTER, drives one host;
// this one runs from init so that TestMain needs no change.)

func init() {
	if agent.IsAgent() {
		return
	}
	if hosts := os.Getenv("TOWORKER_FAULT_MASTER"); hosts != "" {
		faultMasterHelper(strings.Split(hosts, ","), os.Getenv("TOWORKER_FAULT_SSHCONFIG"))
		os.Exit(0)
	}
}

func faultMasterHelper(hosts []string, config string) {
	p, err := remote.NewPool(context.Background(), remote.PoolConfig{
		Hosts: hosts, MaxPerHost: 2, Timeout: -1, SSH: remote.SSHOptions{ConfigFile: config},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "fault master:", err)
		os.Exit(1)
	}
	for _, h := range hosts {
		for range 2 {
			p.Submit(context.Background(), remote.Job{Host: h, Func: FaultSleep.Name(), Data: 300,
				OnOutput: func(l string) { fmt.Println(l) }})
		}
	}
	select {}
}

// ---------------------------------------------------------------------------
// Helpers.

// faultPool starts a pool whose output goes to a buffer and which is
// killed when the test ends.
func faultPool(t *testing.T, cfg remote.PoolConfig) (*remote.Pool, *lockedBuf) {
	t.Helper()
	var out lockedBuf
	if cfg.Stdout == nil {
		cfg.Stdout = &out
	}
	if cfg.Stderr == nil {
		cfg.Stderr = &out
	}
	if cfg.SSH.ConfigFile == "" {
		cfg.SSH.ConfigFile = lab.ConfigFile
	}
	p, err := remote.NewPool(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	return p, &out
}

// waitRun waits for run's outcome, failing the test if it takes longer
// than within.
func waitRun(t *testing.T, run *remote.Run, within time.Duration) (remote.Result, error) {
	t.Helper()
	select {
	case <-run.Done():
	case <-time.After(within):
		t.Fatalf("job %q (%s) has no outcome after %v", run.Job().Desc, run.Job().Func, within)
	}
	return run.Wait()
}

// recvLine receives from ch, failing the test after within.
func recvLine(t *testing.T, ch <-chan string, within time.Duration, what string) string {
	t.Helper()
	select {
	case l := <-ch:
		return l
	case <-time.After(within):
		t.Fatalf("no %s within %v", what, within)
		return ""
	}
}

// eventCounter counts named events from any goroutine.
type eventCounter struct {
	mu sync.Mutex
	m  map[string]int
}

func (c *eventCounter) inc(k string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[string]int)
	}
	c.m[k]++
}

func (c *eventCounter) get(k string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[k]
}

// sshEntry is a host block for writeSSHConfig.
type sshEntry struct {
	alias string
	addr  string        // "host:port"
	key   ssh.PublicKey // recorded in known_hosts for addr
	jump  string        // ProxyJump, if any
}

// writeSSHConfig writes an ssh_config with a block per entry (the lab's
// user and identity, its own known_hosts) followed by the lab's own blocks,
// and returns its path.
func writeSSHConfig(t *testing.T, entries ...sshEntry) string {
	t.Helper()
	dir := t.TempDir()
	khFile := filepath.Join(dir, "known_hosts")
	var cfg, kh strings.Builder
	for _, e := range entries {
		host, port, err := net.SplitHostPort(e.addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&cfg, "Host %s\n  HostName %s\n  Port %s\n  User %s\n  IdentityFile %s\n  IdentitiesOnly yes\n"+
			"  UserKnownHostsFile %s\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n"+
			"  KexAlgorithms curve25519-sha256\n  BatchMode yes\n\n",
			e.alias, host, port, lab.Servers[0].User, lab.IdentityFile, khFile)
		if e.jump != "" {
			fmt.Fprintf(&cfg, "Host %s\n  ProxyJump %s\n\n", e.alias, e.jump)
		}
		kh.WriteString(knownhosts.Line([]string{e.addr}, e.key) + "\n")
	}
	labCfg, err := os.ReadFile(lab.ConfigFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Write(labCfg)
	path := filepath.Join(dir, "ssh_config")
	if err := os.WriteFile(khFile, []byte(kh.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(cfg.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// ---------------------------------------------------------------------------
// The process table.

// hostProc is one line of the process table.
type hostProc struct {
	pid, ppid, pgid int
	state           byte
	comm            string
}

func readProc(pid int) (hostProc, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return hostProc{}, false
	}
	s := string(b)
	open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || close < open {
		return hostProc{}, false
	}
	f := strings.Fields(s[close+1:])
	if len(f) < 3 {
		return hostProc{}, false
	}
	p := hostProc{pid: pid, state: f[0][0], comm: s[open+1 : close]}
	p.ppid, _ = strconv.Atoi(f[1])
	p.pgid, _ = strconv.Atoi(f[2])
	return p, true
}

// ppidOf returns pid's parent, or 0 when pid is gone. (remote_test.go's
// parentPID cannot be used: fmt's Sscanf has no %*c, so it returns 0.)
func ppidOf(pid int) int {
	p, _ := readProc(pid)
	return p.ppid
}

// bossOf returns the agent boss that started worker, failing the test
// when worker's parent is not one.
func bossOf(t *testing.T, worker int) int {
	t.Helper()
	boss := ppidOf(worker)
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", boss))
	if boss <= 1 || !bytes.Contains(cmdline, []byte("--toworker-agent\x00boss")) {
		t.Fatalf("the parent of worker %d is %d (%q), not an agent boss", worker, boss, cmdline)
	}
	return boss
}

// liveProcs lists the live (not zombie) processes.
func liveProcs() []hostProc {
	ents, _ := os.ReadDir("/proc")
	var out []hostProc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ok := readProc(pid); ok && p.state != 'Z' && p.state != 'X' {
			out = append(out, p)
		}
	}
	return out
}

// groupMembers lists the live processes in process group pgid.
func groupMembers(pgid int) []hostProc {
	var out []hostProc
	for _, p := range liveProcs() {
		if p.pgid == pgid {
			out = append(out, p)
		}
	}
	return out
}

// waitAllGone waits until none of pids is alive and no process is left in
// the process group of any of groups, failing the test after within.
func waitAllGone(t *testing.T, what string, pids, groups []int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		var left []string
		for _, pid := range pids {
			if processAlive(pid) {
				p, _ := readProc(pid)
				left = append(left, fmt.Sprintf("%d (%s)", pid, p.comm))
			}
		}
		for _, g := range groups {
			for _, p := range groupMembers(g) {
				left = append(left, fmt.Sprintf("%d (%s, in group %d)", p.pid, p.comm, g))
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s: still running after %v: %s", what, within, strings.Join(left, ", "))
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// parsePids reads "… pids a b …" from a line.
func parsePids(t *testing.T, line string) []int {
	t.Helper()
	_, rest, ok := strings.Cut(line, "pids ")
	if !ok {
		t.Fatalf("no pids in %q", line)
	}
	var out []int
	for _, f := range strings.Fields(rest) {
		n, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("bad pid in %q", line)
		}
		out = append(out, n)
	}
	return out
}

// ---------------------------------------------------------------------------
// tcpRelay is a TCP relay between the master and a lab sshd that can reset
// its connections or silently stop forwarding (a half-open connection: no
// FIN, no RST, nothing).

type tcpRelay struct {
	ln     net.Listener
	target string
	hole   chan struct{} // closed: forward nothing more, close nothing
	stop   chan struct{} // closed by close
	once   sync.Once

	// holeAfter, when set before the first connection, black-holes the
	// relay once the master has sent more than that many bytes.
	holeAfter atomic.Int64
	sent      atomic.Int64
	// rate, when set, paces what the master sends to that many bytes a
	// second: a slow link that stays up.
	rate atomic.Int64

	mu    sync.Mutex
	conns []*net.TCPConn
	wg    sync.WaitGroup
}

func startRelay(t *testing.T, target string) *tcpRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &tcpRelay{ln: ln, target: target, hole: make(chan struct{}), stop: make(chan struct{})}
	r.wg.Add(1)
	go r.accept()
	t.Cleanup(r.close)
	return r
}

func (r *tcpRelay) addr() string { return r.ln.Addr().String() }

func (r *tcpRelay) accept() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", r.target)
		if err != nil {
			c.Close()
			continue
		}
		down := c.(*net.TCPConn)
		upc := up.(*net.TCPConn)
		r.mu.Lock()
		r.conns = append(r.conns, down, upc)
		r.mu.Unlock()
		r.wg.Add(2)
		go r.pipe(upc, down, true)
		go r.pipe(down, upc, false)
	}
}

// pipe copies src to dst; fromMaster counts the bytes toward holeAfter.
func (r *tcpRelay) pipe(dst, src *net.TCPConn, fromMaster bool) {
	defer r.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		select {
		case <-r.hole:
			<-r.stop // drop what was read, read nothing more, close nothing
			return
		default:
		}
		if rate := r.rate.Load(); fromMaster && rate > 0 && n > 0 {
			time.Sleep(time.Duration(int64(n) * int64(time.Second) / rate))
		}
		if limit := r.holeAfter.Load(); fromMaster && limit > 0 && r.sent.Add(int64(n)) > limit {
			r.blackhole()
			<-r.stop
			return
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				err = werr
			}
		}
		if err != nil {
			src.Close()
			dst.Close()
			return
		}
	}
}

// connections counts the connections the relay has accepted.
func (r *tcpRelay) connections() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.conns) / 2
}

// relayedH1 starts a tcpRelay in front of the lab's h1 and returns it with
// an ssh_config that reaches h1 through it as "h1-relayed".
func relayedH1(t *testing.T) (*tcpRelay, string) {
	t.Helper()
	target := lab.Server("h1")
	r := startRelay(t, target.Addr())
	return r, writeSSHConfig(t, sshEntry{alias: "h1-relayed", addr: r.addr(), key: target.HostKey})
}

// killWithin kills p and fails the test if Kill has not returned within d;
// the relay r is then closed, which unblocks the master, so that the test
// can end.
func killWithin(t *testing.T, p *remote.Pool, r *tcpRelay, d time.Duration) {
	t.Helper()
	done := make(chan struct{})
	go func() { p.Kill(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		r.close()
		<-done
		t.Fatalf("Kill did not return within %v", d)
	}
}

// holed reports whether the relay has stopped forwarding.
func (r *tcpRelay) holed() bool {
	select {
	case <-r.hole:
		return true
	default:
		return false
	}
}

// blackhole makes the relay stop forwarding in both directions without
// closing anything.
func (r *tcpRelay) blackhole() { r.once.Do(func() { close(r.hole) }) }

// reset closes every connection with a TCP reset on both sides.
func (r *tcpRelay) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.conns {
		c.SetLinger(0)
		c.Close()
	}
}

func (r *tcpRelay) close() {
	select {
	case <-r.stop:
		return
	default:
	}
	close(r.stop)
	r.ln.Close()
	r.mu.Lock()
	for _, c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

// ---------------------------------------------------------------------------
// Connection faults.

// TestFaultConnectionDroppedMidJob kills the connection under two running
// jobs, by killing the host's sshd and by a TCP reset: the retryable job
// gets OnFailure once and runs again on the other host; the job that may
// not be retried fails with the transport error; each has exactly one
// outcome; and on the lost host the boss, the workers and their
// subprocesses are gone.
func TestFaultConnectionDroppedMidJob(t *testing.T) {
	for _, tc := range []string{"sshd killed", "TCP reset"} {
		t.Run(tc, func(t *testing.T) {
			victim := lab.Server("h4")
			t.Cleanup(func() {
				if !victim.Running() {
					if err := victim.Restart(); err != nil {
						t.Errorf("restart h4: %v", err)
					}
				}
			})
			hosts := []string{"h4", "h3"}
			var config string
			fault := func() {
				if err := victim.Kill(); err != nil {
					t.Fatal(err)
				}
			}
			if tc == "TCP reset" {
				r := startRelay(t, victim.Addr())
				config = writeSSHConfig(t, sshEntry{alias: "h4-relayed", addr: r.addr(), key: victim.HostKey})
				hosts[0] = "h4-relayed"
				fault = r.reset
			}
			p, _ := faultPool(t, remote.PoolConfig{Hosts: hosts, MaxPerHost: 2, Retries: 2,
				SSH: remote.SSHOptions{ConfigFile: config}})
			var ev eventCounter
			lines := make(chan string, 8)
			job := func(desc, host string, noRetry bool) remote.Job {
				return remote.Job{Host: host, Desc: desc, Func: FaultSleep.Name(), Data: 2, NoRetry: noRetry,
					OnOutput: func(l string) { lines <- desc + " " + l },
					OnFailure: func(err error) {
						ev.inc(desc + " OnFailure")
						if !remote.IsFailure(err) {
							t.Errorf("%s: OnFailure(%v), not a *FailureError", desc, err)
						}
					},
					WhenDone: func(remote.Result) { ev.inc(desc + " WhenDone") },
					AllDone:  func() { ev.inc(desc + " AllDone") },
				}
			}
			// The first job goes to the first host (least busy, first
			// listed); the second is pinned there.
			retryable := p.Submit(context.Background(), job("retryable", "", false))
			pinned := p.Submit(context.Background(), job("no-retry", hosts[0], true))
			var pids []int
			for range 2 {
				l := recvLine(t, lines, 30*time.Second, "job start")
				if !strings.Contains(l, "host "+hosts[0]+" ") {
					t.Fatalf("job started elsewhere: %q", l)
				}
				pids = append(pids, parsePids(t, l)...)
			}
			boss := bossOf(t, pids[0])
			fault()

			res, err := waitRun(t, retryable, 30*time.Second)
			if err != nil {
				t.Fatalf("retryable job: %v", err)
			}
			if res.Host != "h3" || res.Attempts != 2 {
				t.Errorf("retryable job ran on %s in %d attempts, want h3 in 2", res.Host, res.Attempts)
			}
			_, err = waitRun(t, pinned, 30*time.Second)
			var fe *remote.FailureError
			if !errors.As(err, &fe) || fe.Host != hosts[0] || fe.Desc != "no-retry" {
				t.Errorf("no-retry job: err = %v, want a *FailureError naming %s and the job", err, hosts[0])
			}
			for k, want := range map[string]int{
				"retryable OnFailure": 1, "retryable WhenDone": 1, "retryable AllDone": 1,
				"no-retry OnFailure": 1, "no-retry WhenDone": 0, "no-retry AllDone": 1,
			} {
				if got := ev.get(k); got != want {
					t.Errorf("%s called %d times, want %d", k, got, want)
				}
			}
			if n := p.Pending(); n != 0 {
				t.Errorf("Pending = %d after both outcomes were taken", n)
			}
			if r, ok := p.TryNext(); ok {
				t.Errorf("a second outcome for %q", r.Job().Desc)
			}
			waitAllGone(t, "processes on the lost host", append(pids, boss), []int{pids[0], pids[2]}, 5*time.Second)
		})
	}
}

// TestFaultHalfOpenConnection makes the connection silently stop carrying
// anything, with no FIN and no RST: the master's keepalive detects it
// within three intervals (plus one tick and a margin), the job is retried
// on another host, and on the host the boss, whose master went silent,
// kills the job's worker and its subprocess and exits.
func TestFaultHalfOpenConnection(t *testing.T) {
	const keepAlive = 200 * time.Millisecond
	r, config := relayedH1(t)
	p, _ := faultPool(t, remote.PoolConfig{Hosts: []string{"h1-relayed", "h2"}, MaxPerHost: 1, Retries: 1,
		KeepAlive: keepAlive, SSH: remote.SSHOptions{ConfigFile: config}})
	lines := make(chan string, 4)
	failed := make(chan error, 4)
	run := p.Submit(context.Background(), remote.Job{Func: FaultSleep.Name(), Data: 2, Desc: "half-open",
		OnOutput:  func(l string) { lines <- l },
		OnFailure: func(err error) { failed <- err }})
	l := recvLine(t, lines, 30*time.Second, "job start")
	if !strings.HasPrefix(l, "host h1-relayed ") {
		t.Fatalf("job started elsewhere: %q", l)
	}
	pids := parsePids(t, l)
	boss := bossOf(t, pids[0])
	holed := time.Now()
	r.blackhole()

	// The master: three silent intervals, detected at the next tick.
	bound := 4*keepAlive + 1500*time.Millisecond
	select {
	case err := <-failed:
		took := time.Since(holed)
		t.Logf("master detected the half-open connection after %v: %v", took.Round(time.Millisecond), err)
		if !remote.IsFailure(err) {
			t.Errorf("OnFailure(%v), want a *FailureError", err)
		}
		if !strings.Contains(err.Error(), "keepalive") {
			t.Errorf("a half-open connection reads %q instead of naming the unanswered keepalives", err)
		}
		if took > bound {
			t.Errorf("detection took %v, want at most %v", took, bound)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the master never noticed the half-open connection")
	}
	res, err := waitRun(t, run, 30*time.Second)
	if err != nil || res.Host != "h2" || res.Attempts != 2 {
		t.Errorf("job: host %s attempts %d err %v; want it retried on h2", res.Host, res.Attempts, err)
	}

	waitHostStops(t, "the silent master's job on the host", pids, boss, holed)
}

// waitHostStops waits for a job's processes (pids, the first its worker,
// whose process group goes too) and its boss to be gone after the master
// went silent at holed: the boss hears nothing for three ping intervals
// (whole seconds: 1 s for the tests' short keepalives), notices at its next
// tick, and kills the job.
func waitHostStops(t *testing.T, what string, pids []int, boss int, holed time.Time) {
	t.Helper()
	hostBound := 3*time.Second + time.Second + 3*time.Second
	waitAllGone(t, what, pids, []int{pids[0]}, hostBound-time.Since(holed))
	waitAllGone(t, "the boss of the silent master", []int{boss}, nil, hostBound-time.Since(holed)+2*time.Second)
}

// TestFaultHalfOpenDuringUpload is the half-open connection while the
// master is writing a large input: the keepalive must still detect it,
// and the job must end by its timeout at the latest.
func TestFaultHalfOpenDuringUpload(t *testing.T) {
	const keepAlive = 200 * time.Millisecond
	r, config := relayedH1(t)
	p, _ := faultPool(t, remote.PoolConfig{Hosts: []string{"h1-relayed"}, KeepAlive: keepAlive,
		SSH: remote.SSHOptions{ConfigFile: config}})
	if _, err := remote.CallOn(context.Background(), p, "", Echo, []byte("warm")); err != nil {
		t.Fatal(err)
	}
	r.blackhole()
	start := time.Now()
	run := p.Submit(context.Background(), remote.Job{Func: Echo.Name(), Data: make([]byte, 32<<20),
		Timeout: 3 * time.Second, NoRetry: true})
	select {
	case <-run.Done():
		_, err := run.Wait()
		if err == nil {
			t.Fatal("a job on a black-holed connection succeeded")
		}
		t.Logf("ended after %v with: %v", time.Since(start).Round(time.Millisecond), err)
	case <-time.After(3*time.Second + 4*keepAlive + 3*time.Second):
		r.close() // unblock the master so that the test can end
		t.Fatal("a job writing its input into a half-open connection is stuck past its timeout and the keepalive bound")
	}
}

// TestFaultSilentUnderOutputFlood: a job floods its output when the link
// goes silent, so the boss's writes to sshd block (the SSH window is spent)
// as the master stops hearing it. The master fails the job by its
// keepalives; on the host the boss, which hears nothing more either, still
// stops and kills the job's process group, though its output is stuck.
func TestFaultSilentUnderOutputFlood(t *testing.T) {
	const keepAlive = 200 * time.Millisecond
	r, config := relayedH1(t)
	p, _ := faultPool(t, remote.PoolConfig{Hosts: []string{"h1-relayed"}, KeepAlive: keepAlive,
		SSH: remote.SSHOptions{ConfigFile: config}})
	first := make(chan string, 1)
	run := p.Submit(context.Background(), remote.Job{Func: FaultFlood.Name(), NoRetry: true,
		OnOutput: func(l string) {
			if strings.HasPrefix(l, "host ") {
				first <- l
			}
		}})
	pids := parsePids(t, recvLine(t, first, 30*time.Second, "job start"))
	boss := bossOf(t, pids[0])
	time.Sleep(200 * time.Millisecond) // the flood fills every buffer on the way
	holed := time.Now()
	r.blackhole()
	_, err := waitRun(t, run, 20*time.Second)
	if err == nil || !remote.IsFailure(err) || !strings.Contains(err.Error(), "keepalive") {
		t.Errorf("job: %v; want a *FailureError naming the unanswered keepalives", err)
	}
	waitHostStops(t, "the flooding job on the host", pids, boss, holed)
}

// TestFaultJumpHostGoesSilent: two warm hosts behind one jump host, whose
// link then goes silent. Both connections are noticed dead by their
// keepalives (the pings travel through the silent hop), both jobs fail as
// connection failures, and Kill returns.
func TestFaultJumpHostGoesSilent(t *testing.T) {
	const keepAlive = 200 * time.Millisecond
	jump := lab.Server("h2")
	r := startRelay(t, jump.Addr())
	h1, h3 := lab.Server("h1"), lab.Server("h3")
	config := writeSSHConfig(t, sshEntry{alias: "j-silent", addr: r.addr(), key: jump.HostKey},
		sshEntry{alias: "h1-behind", addr: h1.Addr(), key: h1.HostKey, jump: "j-silent"},
		sshEntry{alias: "h3-behind", addr: h3.Addr(), key: h3.HostKey, jump: "j-silent"})
	hosts := []string{"h1-behind", "h3-behind"}
	p, _ := faultPool(t, remote.PoolConfig{Hosts: hosts, KeepAlive: keepAlive, SSH: remote.SSHOptions{ConfigFile: config}})
	runs := make(map[string]*remote.Run)
	lines := make(chan string, 4)
	for _, h := range hosts {
		runs[h] = p.Submit(context.Background(), remote.Job{Host: h, Func: FaultSleep.Name(), Data: 30, NoRetry: true,
			OnOutput: func(l string) { lines <- l }})
	}
	for range hosts {
		recvLine(t, lines, 30*time.Second, "job start")
	}
	holed := time.Now()
	r.blackhole()
	for _, h := range hosts {
		_, err := waitRun(t, runs[h], 20*time.Second)
		if err == nil || !remote.IsFailure(err) || !strings.Contains(err.Error(), "keepalive") {
			t.Errorf("%s: %v; want a *FailureError naming the unanswered keepalives", h, err)
		}
	}
	t.Logf("both connections behind the silent hop failed after %v", time.Since(holed).Round(time.Millisecond))
	killWithin(t, p, r, 15*time.Second)
}

// TestFaultLargeInputStopsAtTimeout: a job's large input goes out over a
// slow link that stays up. When the job times out, or is cancelled, while
// its input is still being sent, the rest is not sent: the job ends then,
// and the connection goes on serving the next jobs. With one worker slot
// (MaxPerHost 1, and Pipeline, which makes the boss keep to it), the next
// job runs only if the host let go of the worker that was reading the
// partial call.
func TestFaultLargeInputStopsAtTimeout(t *testing.T) {
	target := lab.Server("h1")
	r := startRelay(t, target.Addr())
	config := writeSSHConfig(t, sshEntry{alias: "h1-slow", addr: r.addr(), key: target.HostKey})
	p, _ := faultPool(t, remote.PoolConfig{Hosts: []string{"h1-slow"}, MaxPerHost: 1, Pipeline: 1, SSH: remote.SSHOptions{ConfigFile: config}})
	echo := func(n int) error {
		out, err := remote.CallOn(context.Background(), p, "", Echo, bytes.Repeat([]byte{'e'}, n))
		if err == nil && len(out) != n {
			err = fmt.Errorf("echo of %d bytes returned %d", n, len(out))
		}
		return err
	}
	if err := echo(10); err != nil {
		t.Fatal(err)
	}
	const rate = 2 << 20 // bytes a second: 32 MiB would take 16 s
	for _, tc := range []struct {
		name   string
		job    func(ctx context.Context) remote.Job
		cancel time.Duration // cancel the job's context after this long; 0: never
		want   error
	}{
		{"timeout", func(context.Context) remote.Job { return remote.Job{Timeout: time.Second} }, 0, remote.ErrTimeout},
		{"cancel", func(context.Context) remote.Job { return remote.Job{} }, time.Second, context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r.rate.Store(rate)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			job := tc.job(ctx)
			job.Func, job.Data, job.NoRetry = Echo.Name(), make([]byte, 32<<20), true
			start := time.Now()
			run := p.Submit(ctx, job)
			if tc.cancel > 0 {
				time.AfterFunc(tc.cancel, cancel)
			}
			_, err := waitRun(t, run, 30*time.Second)
			took := time.Since(start)
			r.rate.Store(0)
			if !errors.Is(err, tc.want) {
				t.Fatalf("the job ended with %v after %v, want %v", err, took.Round(time.Millisecond), tc.want)
			}
			if took > 8*time.Second {
				t.Errorf("the job ended %v after it started, its input still going out long after its end at 1 s", took.Round(time.Millisecond))
			}
			if err := echo(100 << 10); err != nil {
				t.Fatalf("the next job: %v", err)
			}
			if n := r.connections(); n != 1 {
				t.Errorf("%d connections to the host, want the first one still serving", n)
			}
		})
	}
}

// TestFaultKillWhileInputStuck: a job's input is being written into a
// link that went silent, with keepalive off, so nothing notices: the write
// waits for SSH window that never comes. Kill still returns (the pool gives
// the connection StopWait and a second, then closes it under the write),
// and the job ends with an error.
func TestFaultKillWhileInputStuck(t *testing.T) {
	r, config := relayedH1(t)
	p, _ := faultPool(t, remote.PoolConfig{Hosts: []string{"h1-relayed"}, KeepAlive: -1,
		SSH: remote.SSHOptions{ConfigFile: config}})
	if _, err := remote.CallOn(context.Background(), p, "", Echo, []byte("warm")); err != nil {
		t.Fatal(err)
	}
	r.blackhole()
	run := p.Submit(context.Background(), remote.Job{Func: Echo.Name(), Data: make([]byte, 32<<20), NoRetry: true})
	// The input fills the SSH window (2 MiB) and the write waits.
	time.Sleep(500 * time.Millisecond)
	select {
	case <-run.Done():
		_, err := run.Wait()
		t.Fatalf("the job ended before the kill: %v", err)
	default:
	}
	killWithin(t, p, r, 20*time.Second)
	if _, err := waitRun(t, run, 5*time.Second); err == nil {
		t.Error("the job whose input was stuck succeeded")
	} else if !errors.Is(err, remote.ErrClosed) {
		t.Errorf("the job whose input was stuck failed with %v, want an error wrapping ErrClosed", err)
	}
}

// TestFaultLinkSilentDuringConnect: the link goes silent (no FIN, no RST)
// at each stage of a connect: the SSH login, the agent's upload, and the
// upload to a host behind a jump host whose own link stays up.
// ConnectTimeout bounds them all: the job fails soon after it, with a
// *FailureError, and Kill returns.
func TestFaultLinkSilentDuringConnect(t *testing.T) {
	for _, tc := range []struct {
		name      string
		holeAfter int64 // bytes from the master before the link goes silent
		jump      string
		silentHop bool // the relay is in front of the jump host, not of h1
	}{
		{"version exchange", 1, "", false},
		{"login", 1100, "", false},
		{"session open", 1500, "", false},
		{"agent upload", 256 << 10, "", false},
		{"agent upload behind a jump host", 256 << 10, "h2", false},
		{"the jump host's link, at the forwarding", 1500, "j-silent", true},
		{"the jump host's link, in the login behind it", 3000, "j-silent", true},
		{"the jump host's link, in the upload behind it", 256 << 10, "j-silent", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target := lab.Server("h1")
			var r *tcpRelay
			var config string
			if tc.silentHop {
				jump := lab.Server("h2")
				r = startRelay(t, jump.Addr())
				config = writeSSHConfig(t, sshEntry{alias: "j-silent", addr: r.addr(), key: jump.HostKey},
					sshEntry{alias: "h1-silent", addr: target.Addr(), key: target.HostKey, jump: tc.jump})
			} else {
				r = startRelay(t, target.Addr())
				config = writeSSHConfig(t, sshEntry{alias: "h1-silent", addr: r.addr(), key: target.HostKey, jump: tc.jump})
			}
			r.holeAfter.Store(tc.holeAfter)
			const connectTimeout = 3 * time.Second
			p, _ := faultPool(t, remote.PoolConfig{Hosts: []string{"h1-silent"}, MinWarm: -1, ConnectTimeout: connectTimeout,
				Agent: remote.AgentOptions{CacheDir: filepath.Join(t.TempDir(), "cache")}, SSH: remote.SSHOptions{ConfigFile: config}})
			run := p.Submit(context.Background(), remote.Job{Host: "h1-silent", Func: Whoami.Name(), NoRetry: true})
			_, err := waitRun(t, run, 10*connectTimeout)
			if err == nil {
				t.Fatal("a job whose host's link went silent during the connect succeeded")
			}
			if !r.holed() {
				t.Fatalf("the job failed before the link went silent: %v", err)
			}
			if !remote.IsFailure(err) || !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("error %q (%T): want a *FailureError for the connect timeout", err, err)
			}
			killWithin(t, p, r, 10*time.Second)
		})
	}
}

// TestFaultSharedCacheUploaderStalls: two hosts share one agent cache (a
// home on NFS) and the connection uploading the agent into it stalls (its
// link goes silent mid-upload). The other host's connection, which waits
// for that upload instead of sending its own, gives up after half its
// connect time, says so, uploads the agent itself and runs the job.
func TestFaultSharedCacheUploaderStalls(t *testing.T) {
	shared := filepath.Join(t.TempDir(), "cache")
	target := lab.Server("h1")
	r := startRelay(t, target.Addr())
	r.holeAfter.Store(256 << 10) // past the login and the first frames, early in the upload
	config := writeSSHConfig(t, sshEntry{alias: "h1-stalled", addr: r.addr(), key: target.HostKey})
	agentOpts := remote.AgentOptions{CacheDir: shared}

	stalled, _ := faultPool(t, remote.PoolConfig{Hosts: []string{"h1-stalled"}, MinWarm: -1,
		ConnectTimeout: 60 * time.Second, Agent: agentOpts, SSH: remote.SSHOptions{ConfigFile: config}})
	stalledRun := stalled.Submit(context.Background(), remote.Job{Host: "h1-stalled", Func: Whoami.Name(), NoRetry: true})
	select {
	case <-r.hole:
	case <-stalledRun.Done():
		_, err := stalledRun.Wait()
		t.Fatalf("the job on the stalling link ended before its upload stalled: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the upload to h1-stalled did not reach the relay's limit in 30 s")
	}

	var warn lockedBuf
	const connectTimeout = 6 * time.Second
	waiter, _ := faultPool(t, remote.PoolConfig{Hosts: []string{"h2"}, MinWarm: -1, ConnectTimeout: connectTimeout,
		Agent: agentOpts, SSH: remote.SSHOptions{ConfigFile: config, Warn: &warn}})
	res, err := waitRun(t, waiter.Submit(context.Background(), remote.Job{Host: "h2", Func: Whoami.Name(), NoRetry: true}), 2*connectTimeout)
	var who Who
	if err == nil {
		err = res.Decode(&who)
	}
	if err != nil {
		t.Fatalf("h2, whose host shares the cache with the stalled upload: %v (warnings: %q)", err, warn.String())
	}
	if filepath.Dir(who.Exe) != shared {
		t.Errorf("h2's agent runs from %s, not from the shared cache %s", who.Exe, shared)
	}
	if n := waiter.Stats().Total.Uploads; n != 1 {
		t.Errorf("h2 uploaded the agent %d times, want 1 (after giving up on the stalled upload)", n)
	}
	if w := warn.String(); !strings.Contains(w, "toworker: h2: another connection's upload of the agent") ||
		!strings.Contains(w, "uploading it from this connection") {
		t.Errorf("h2 did not say it gave up waiting for the stalled upload; warnings: %q", w)
	}

	select {
	case <-stalledRun.Done():
		_, err := stalledRun.Wait()
		t.Fatalf("the job on the stalled link ended while its link was silent: %v", err)
	default:
	}
	stalled.Kill()
	if _, err := waitRun(t, stalledRun, 30*time.Second); err == nil {
		t.Error("the job on the stalled link succeeded")
	}
}

// TestFaultMasterKilledSeveralHosts SIGKILLs a master (this test binary
// started again as a helper) while two jobs run on each of three hosts:
// within 5 s every boss has killed its workers and their subprocesses and
// exited, as the process table shows.
func TestFaultMasterKilledSeveralHosts(t *testing.T) {
	hosts := []string{"h1", "h2", "h3"}
	exe, _ := os.Executable()
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), "TOWORKER_FAULT_MASTER="+strings.Join(hosts, ","),
		"TOWORKER_FAULT_SSHCONFIG="+lab.ConfigFile)
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	perHost := map[string]int{}
	var pids, groups, bosses []int
	for range 2 * len(hosts) {
		l := recvLine(t, lines, 60*time.Second, "job start from the master helper")
		var h string
		fmt.Sscanf(l, "host %s", &h)
		perHost[h]++
		ps := parsePids(t, l)
		pids = append(pids, ps...)
		groups = append(groups, ps[0])
		if b := bossOf(t, ps[0]); !slices.Contains(bosses, b) {
			bosses = append(bosses, b)
		}
	}
	for _, h := range hosts {
		if perHost[h] != 2 {
			t.Fatalf("jobs per host %v, want 2 on each of %v", perHost, hosts)
		}
	}
	if len(bosses) != len(hosts) {
		t.Fatalf("bosses %v, want one per host", bosses)
	}
	killed := time.Now()
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	waitAllGone(t, "workers, subprocesses and bosses of the killed master", append(pids, bosses...), groups, 5*time.Second)
	t.Logf("%d bosses, %d workers and their subprocesses gone %v after the master was killed",
		len(bosses), len(groups), time.Since(killed).Round(time.Millisecond))
}

// ---------------------------------------------------------------------------
// Worker crashes.

// TestFaultWorkerCrashes takes workers down every way a job can, while
// another job runs on the same boss: each crash is that job's structured
// *RemoteError (kind, message, the runtime's crash output as stack where
// there is one), never a transport failure, and the other job carries on
// untouched.
func TestFaultWorkerCrashes(t *testing.T) {
	p, _ := faultPool(t, remote.PoolConfig{Hosts: []string{"h1"}, MaxPerHost: 2, Retries: 3})
	var stop atomic.Bool
	var ticks []string
	var tickMu sync.Mutex
	var ev eventCounter
	steady := p.Submit(context.Background(), remote.Job{Func: FaultSteady.Name(), Desc: "steady", Timeout: 2 * time.Minute,
		OnOutput:  func(l string) { tickMu.Lock(); ticks = append(ticks, l); tickMu.Unlock() },
		OnFailure: func(error) { ev.inc("steady failure") },
		Callbacks: map[string]remote.Callback{"more": func(context.Context, remote.CallbackRequest) (any, error) {
			return !stop.Load(), nil
		}}})
	for deadline := time.Now().Add(30 * time.Second); ; {
		tickMu.Lock()
		n := len(ticks)
		tickMu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the steady job did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}

	tests := []struct {
		how      string
		kind     string
		exitCode int
		signal   string
		message  string   // in Message; "a|b": either
		stack    []string // in Stack; nil: none expected
	}{
		{"goroutine-panic", remote.KindExit, 2, "", "panic: boom in a goroutine the job started",
			[]string{"panic: boom in a goroutine the job started", "goroutine ", "remote_test"}},
		{"exit-3", remote.KindExit, 3, "", "status 3", nil},
		{"nil-deref", remote.KindPanic, 0, "", "invalid memory address or nil pointer dereference", []string{"remote_test"}},
		// The runtime prints a fatal error's first lines ("unexpected fault
		// address", "fatal error: …") only on stderr, where the boss looks
		// for them; if the worker's own output pump had read them but not
		// sent them when the runtime froze it, they are lost, and the
		// message falls back to the crash output's first line.
		{"bad-address", remote.KindExit, 2, "", "status 2", []string{"SIGSEGV", "goroutine "}},
		{"kill-segv", remote.KindExit, 2, "", "SIGSEGV", []string{"SIGSEGV", "goroutine "}},
		{"segv-traceback-crash", remote.KindSignal, 0, "aborted", "killed by signal", []string{"SIGSEGV", "goroutine "}},
		{"oom", remote.KindExit, 2, "", "status 2", []string{"runtime.throw", "mallocgc", "goroutine "}},
		{"sigkill", remote.KindSignal, 0, "killed", "killed by signal", nil},
	}
	for _, tt := range tests {
		t.Run(tt.how, func(t *testing.T) {
			var failures atomic.Int32
			res, err := waitRun(t, p.Submit(context.Background(), remote.Job{Func: FaultCrash.Name(), Data: tt.how, Desc: tt.how,
				OnFailure: func(error) { failures.Add(1) },
				OnError:   func(string) {}}), time.Minute)
			var re *remote.RemoteError
			if !errors.As(err, &re) {
				t.Fatalf("err = %v (%T), want *RemoteError", err, err)
			}
			if tt.how == "oom" && raceEnabled && re.Kind == remote.KindExit && re.ExitCode == 66 {
				// Under the race detector, the worker's address space also
				// holds the detector's shadow memory; now and then mapping
				// that is what fails first, and the detector's runtime
				// exits with its own status, 66, before Go's allocator can
				// report the out-of-memory error.
				t.Logf("the race detector's runtime ran out of address space first: %v", err)
				return
			}
			if remote.IsFailure(err) || failures.Load() != 0 || res.Attempts != 1 {
				t.Errorf("a crash was treated as a transport failure: failures=%d attempts=%d", failures.Load(), res.Attempts)
			}
			if re.Kind != tt.kind || re.ExitCode != tt.exitCode || re.Signal != tt.signal {
				t.Errorf("kind=%q exit=%d signal=%q, want %q %d %q", re.Kind, re.ExitCode, re.Signal, tt.kind, tt.exitCode, tt.signal)
			}
			if !slices.ContainsFunc(strings.Split(tt.message, "|"), func(s string) bool { return strings.Contains(re.Message, s) }) {
				t.Errorf("message %q does not contain %q", re.Message, tt.message)
			}
			for _, s := range tt.stack {
				if !strings.Contains(re.Stack, s) {
					t.Errorf("stack does not contain %q:\n%.2000s", s, re.Stack)
				}
			}
			if (tt.how == "oom" || tt.how == "bad-address") && !strings.Contains(re.Message, "fatal error") {
				t.Logf("the fatal error's first lines were lost (the worker's output pump had read them): %s", re.Message)
			}
			if tt.stack == nil && re.Stack != "" {
				t.Errorf("unexpected stack: %.500s", re.Stack)
			}
			if re.Host != "h1" || re.Desc != tt.how || !strings.Contains(err.Error(), tt.how) {
				t.Errorf("error does not name host and job: %v", err)
			}
			t.Logf("%v", err)
		})
	}

	stop.Store(true)
	res, err := waitRun(t, steady, time.Minute)
	if err != nil {
		t.Fatalf("the job beside the crashes failed: %v", err)
	}
	var n int
	res.Decode(&n)
	tickMu.Lock()
	defer tickMu.Unlock()
	if len(ticks) != n || res.Attempts != 1 || ev.get("steady failure") != 0 {
		t.Errorf("steady job: %d ticks seen, %d reported, %d attempts, %d failures", len(ticks), n, res.Attempts, ev.get("steady failure"))
	}
	for i, l := range ticks {
		if l != fmt.Sprintf("tick %d", i) {
			t.Fatalf("steady job's line %d = %q: output lost or mixed with another job's", i, l)
		}
	}
	if st := p.Stats(); st.Total.Retried != 0 || st.Hosts["h1"].Uploads > 1 {
		t.Errorf("crashes disturbed the connection: %+v", st.Total)
	}
}

// ---------------------------------------------------------------------------
// Hosts that do not answer.

// faultHost starts a faultssh server and an ssh_config naming it alias.
func faultHost(t *testing.T, alias string, o faultssh.Options) (*faultssh.Server, string) {
	t.Helper()
	if o.AuthorizedKey == nil {
		o.AuthorizedKey = lab.Signer().PublicKey()
	}
	srv, err := faultssh.Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv, writeSSHConfig(t, sshEntry{alias: alias, addr: srv.Addr, key: srv.HostKey})
}

// TestFaultUnresponsiveHosts: a host that accepts TCP but never finishes
// the SSH handshake, one that answers one byte per second, and one that
// takes the exec request and then says nothing each fail within
// PoolConfig.ConnectTimeout (plus a margin) with an error that names the
// host and says what timed out.
func TestFaultUnresponsiveHosts(t *testing.T) {
	const connectTimeout = time.Second
	tests := []struct {
		name string
		opts faultssh.Options
		op   string // FailureError.Op
		says string
	}{
		{"handshake never finishes", faultssh.Options{Stall: true}, "connect", "ssh handshake"},
		{"one byte per second", faultssh.Options{ByteDelay: time.Second}, "connect", "ssh handshake"},
		{"exec never answers", faultssh.Options{Exec: func(cmd string, ch ssh.Channel) uint32 {
			io.Copy(io.Discard, ch)
			return 0
		}}, "bootstrap", "wait for agent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, config := faultHost(t, "silent", tt.opts)
			p, _ := faultPool(t, remote.PoolConfig{Hosts: []string{"silent"}, ConnectTimeout: connectTimeout,
				SSH: remote.SSHOptions{ConfigFile: config}})
			start := time.Now()
			_, err := waitRun(t, p.Submit(context.Background(), remote.Job{Func: Noop.Name(), NoRetry: true}), 30*time.Second)
			took := time.Since(start)
			var fe *remote.FailureError
			if !errors.As(err, &fe) || fe.Op != tt.op || fe.Host != "silent" {
				t.Fatalf("err = %v, want a *FailureError of op %q for host silent", err, tt.op)
			}
			if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), tt.says) {
				t.Errorf("error %q does not say that %s timed out", err, tt.says)
			}
			if took > connectTimeout+2*time.Second {
				t.Errorf("failing took %v, want about ConnectTimeout (%v)", took, connectTimeout)
			}
			if srv.Accepted() == 0 {
				t.Errorf("the server saw no connection")
			}
			t.Logf("after %v: %v", took.Round(time.Millisecond), err)
		})
	}
}

// ---------------------------------------------------------------------------
// Slow consumers and big output.

// eventBuffer is the number of events (output frames, log records, the
// result) the master queues per running job between the connection's
// reader and the job's handlers (eventQueue in remote/attempt.go). An
// output frame holds at most what the worker read from the job's pipe at
// once (32 KiB), so a blocked handler holds at most eventBuffer × 32 KiB
// before its connection stalls.
const eventBuffer = remote.EventQueue

// TestFaultSlowConsumer blocks one job's OnOutput handler: another job on
// the same connection still gets its output, callbacks and result, as long
// as the blocked job has printed less than the per-job buffer. Beyond it,
// the connection waits for the handler (back-pressure, not unbounded
// memory); that part is measured and logged.
func TestFaultSlowConsumer(t *testing.T) {
	p, _ := faultPool(t, remote.PoolConfig{Hosts: []string{"h3"}, MaxPerHost: 2, MinWarm: 2})
	release := make(chan struct{})
	blocked := make(chan struct{})
	var once sync.Once
	var aLines atomic.Int32
	const aN = eventBuffer / 2 // one write (at most one frame) per line
	a := p.Submit(context.Background(), remote.Job{Func: FaultLines.Name(), Data: LinesIn{N: aN, PauseMicros: 200},
		Desc: "slow consumer", OnOutput: func(string) {
			once.Do(func() { close(blocked); <-release })
			aLines.Add(1)
		}})
	<-blocked

	var bLines, pings atomic.Int32
	b := p.Submit(context.Background(), remote.Job{Func: FaultLines.Name(), Data: LinesIn{N: 50, Callbacks: 3}, Desc: "neighbour",
		OnOutput: func(string) { bLines.Add(1) },
		Callbacks: map[string]remote.Callback{"ping": func(context.Context, remote.CallbackRequest) (any, error) {
			pings.Add(1)
			return "pong", nil
		}}})
	select {
	case <-b.Done():
		if _, err := b.Wait(); err != nil {
			t.Fatalf("neighbour: %v", err)
		}
		if bLines.Load() != 50 || pings.Load() != 3 {
			t.Errorf("neighbour got %d lines and %d callbacks, want 50 and 3", bLines.Load(), pings.Load())
		}
	case <-time.After(20 * time.Second):
		close(release)
		t.Fatalf("a job stalled behind another job's blocked output handler (%d lines < buffer of %d events)", aN, eventBuffer)
	}
	select {
	case <-a.Done():
		t.Fatal("the slow consumer's job ended while its handler was blocked")
	default:
	}
	close(release)
	if _, err := waitRun(t, a, 30*time.Second); err != nil || aLines.Load() != aN {
		t.Fatalf("slow consumer: %d lines, %v; want %d", aLines.Load(), err, aN)
	}

	// Beyond the buffer: measured, not promised.
	release2 := make(chan struct{})
	blocked2 := make(chan struct{})
	var once2 sync.Once
	const beyond = 128 // lines: well past the buffer, however the worker groups them in frames
	a2 := p.Submit(context.Background(), remote.Job{Func: FaultLines.Name(), Data: LinesIn{N: beyond, PauseMicros: 200},
		OnOutput: func(string) { once2.Do(func() { close(blocked2); <-release2 }) }})
	<-blocked2
	time.Sleep(beyond * 300 * time.Microsecond) // let it print past the buffer
	b2 := p.Submit(context.Background(), remote.Job{Func: FaultLines.Name(), Data: LinesIn{N: 1}, OnOutput: func(string) {}})
	select {
	case <-b2.Done():
		t.Logf("beyond the buffer: the neighbour still completed")
	case <-time.After(2 * time.Second):
		t.Logf("beyond the buffer (%d lines): the neighbour waits for the blocked handler (connection-wide back-pressure)", beyond)
	}
	close(release2)
	for _, r := range []*remote.Run{a2, b2} {
		if _, err := waitRun(t, r, 30*time.Second); err != nil {
			t.Errorf("after release: %v", err)
		}
	}
}

// TestFaultSlowConsumerKeepsConnection blocks a job's output handler for
// longer than three keepalive intervals while the job prints more than the
// per-job buffer, so that the master's reader waits for the handler: a
// consumer being slow must not make the master declare the live connection
// dead, fail the job in transport and run it a second time.
func TestFaultSlowConsumerKeepsConnection(t *testing.T) {
	const keepAlive = 200 * time.Millisecond
	p, _ := faultPool(t, remote.PoolConfig{Hosts: []string{"h3"}, KeepAlive: keepAlive, Retries: 1})
	var lines, failures atomic.Int32
	var once sync.Once
	const n = 128 // lines: well past the per-job buffer of eventBuffer frames
	run := p.Submit(context.Background(), remote.Job{Func: FaultLines.Name(), Data: LinesIn{N: n, PauseMicros: 100},
		OnFailure: func(error) { failures.Add(1) },
		OnOutput: func(string) {
			once.Do(func() { time.Sleep(10 * keepAlive) })
			lines.Add(1)
		}})
	res, err := waitRun(t, run, time.Minute)
	if failures.Load() != 0 || err != nil || res.Attempts != 1 || lines.Load() != n {
		msg := fmt.Sprintf("a slow output handler: err %v, %d OnFailure calls, %d attempts, %d lines of %d", err, failures.Load(), res.Attempts, lines.Load(), n)
		t.Error(msg)
	}
}

// TestFaultGigabyteOutput runs a job that prints 1 GiB (1 Mi lines of
// 1 KiB) while OnOutput counts it: the master's heap stays bounded
// (back-pressure from the handler to the host), and every byte is
// accounted for.
func TestFaultGigabyteOutput(t *testing.T) {
	size := int64(1 << 30)
	if testing.Short() {
		size = 64 << 20
	}
	p, _ := faultPool(t, remote.PoolConfig{Hosts: []string{"h2"}})
	var lines, nbytes, bad int64 // owned by the job's handler
	// HeapInuse (sampled every 50 ms) includes garbage not yet swept, which
	// can overshoot the GC's target when the GC is starved of CPU; the live
	// heap (HeapAlloc right after a GC, every 500 ms) is what output held
	// in the master would show up in.
	stop := make(chan struct{})
	var peak, livePeak uint64
	var sampler sync.WaitGroup
	sampler.Add(1)
	go func() {
		defer sampler.Done()
		var ms runtime.MemStats
		for i := 0; ; i++ {
			if i%10 == 9 {
				runtime.GC()
				runtime.ReadMemStats(&ms)
				livePeak = max(livePeak, ms.HeapAlloc)
			}
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	start := time.Now()
	cmd := fmt.Sprintf(`yes "$(head -c 1023 /dev/zero | tr '\0' x)" | head -c %d`, size)
	res, err := waitRun(t, p.Submit(context.Background(), remote.Job{Func: agent.Exec.Name(), Data: agent.ExecIn{Command: cmd},
		Timeout: 5 * time.Minute,
		OnOutput: func(l string) {
			lines++
			nbytes += int64(len(l)) + 1
			if len(l) != 1023 {
				bad++
			}
		}}), 6*time.Minute)
	close(stop)
	sampler.Wait()
	if err != nil {
		t.Fatal(err)
	}
	var out agent.ExecOut
	if err := res.Decode(&out); err != nil || out.ExitCode != 0 {
		t.Fatalf("exec: %+v %v", out, err)
	}
	took := time.Since(start)
	t.Logf("%d MiB in %d lines in %v (%.0f MiB/s); peak HeapInuse %d MiB, peak live heap %d MiB", nbytes>>20, lines,
		took.Round(time.Millisecond), float64(nbytes)/(1<<20)/took.Seconds(), peak>>20, livePeak>>20)
	if nbytes != size || lines != size/1024 || bad != 0 {
		t.Errorf("got %d bytes in %d lines (%d of the wrong length), want %d bytes in %d lines", nbytes, lines, bad, size, size/1024)
	}
	if livePeak > 64<<20 || peak > 400<<20 {
		t.Errorf("master heap peaked at %d MiB live, %d MiB in use while streaming output; want < 64 MiB live and < 400 MiB in use",
			livePeak>>20, peak>>20)
	}
}

// ---------------------------------------------------------------------------
// What the boss kills.

// TestFaultBossKillsOnlyItsOwn cancels a job that started a process in its
// worker's group and one in a new session (setsid): the worker's whole
// process group is gone, and an unrelated process of the same user, started
// outside toworker, is untouched. The setsid process escapes the group, as
// SECURITY.md says; the test reports it and kills it itself.
func TestFaultBossKillsOnlyItsOwn(t *testing.T) {
	bystander := exec.Command("sleep", "300")
	if err := bystander.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bystander.Process.Kill(); bystander.Wait() })
	p, _ := faultPool(t, remote.PoolConfig{Hosts: []string{"h2"}})
	lines := make(chan string, 1)
	ctx, cancel := context.WithCancel(context.Background())
	run := p.Submit(ctx, remote.Job{Func: FaultEscape.Name(), OnOutput: func(l string) { lines <- l }})
	pids := parsePids(t, recvLine(t, lines, 30*time.Second, "job start"))
	worker, inGroup, escaped := pids[0], pids[1], pids[2]
	t.Cleanup(func() {
		if p, ok := readProc(escaped); ok && p.comm == "sleep" {
			syscall.Kill(escaped, syscall.SIGKILL)
		}
	})
	cancel()
	if _, err := waitRun(t, run, 30*time.Second); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	waitAllGone(t, "the cancelled job's process group", []int{worker, inGroup}, []int{worker}, 5*time.Second)
	time.Sleep(200 * time.Millisecond)
	if !processAlive(bystander.Process.Pid) {
		t.Errorf("an unrelated process of the same user was killed")
	}
	if _, err := remote.CallOn(context.Background(), p, "h2", Echo, []byte("still here")); err != nil {
		t.Errorf("host unusable after the cancel: %v", err)
	}
	t.Logf("the setsid process escaped the worker's group (documented, not promised): alive=%v", processAlive(escaped))
}

// ---------------------------------------------------------------------------
// Load with faults.

// TestFaultLoad runs 10,000 small jobs on 8 hosts while faults are injected
// on a schedule drawn from a fixed seed: connections dropped (a host's sshd
// killed, restarted 300 ms later) and workers killed from outside (SIGKILL
// of a random worker process on the hosts). Besides, a seeded 0.5% of the
// jobs kill their own worker and 0.5% return an error.
//
// Decision: a worker that dies during a job is that job's own failure
// (*RemoteError of kind "signal"), not a transport failure, so it is not
// retried: the master cannot tell a job that crashes its worker (a poison
// job that would take down a worker on every host) from an outside kill.
// Only lost connections are retried. So: every job has exactly one
// outcome; a job that did not kill its own worker either succeeds or, if a
// worker was killed under it from outside, ends with kind "signal"; no job
// ends in a transport failure (retries outnumber the hosts that are down
// at once).
func TestFaultLoad(t *testing.T) {
	n := 10000
	if testing.Short() {
		n = 1000
	}
	lab8 := sshdtest.NewLab(t, sshdtest.LabOptions{Hosts: 8, BaseIP: "127.0.3."})
	var hosts []string
	for _, s := range lab8.Servers {
		hosts = append(hosts, s.Name)
	}
	rng := rand.New(rand.NewPCG(8, 10000))
	modes := make([]int, n)
	for i := range modes {
		switch r := rng.IntN(1000); {
		case r < 5:
			modes[i] = 1
		case r < 10:
			modes[i] = 2
		}
	}
	type fault struct {
		at   int // after this many outcomes
		kind string
		pick int
	}
	var faults []fault
	for at := n / 20; at < n*9/10; at += n/15 + rng.IntN(n/15) {
		kind := "drop"
		if rng.IntN(2) == 0 {
			kind = "worker-kill"
		}
		faults = append(faults, fault{at: at, kind: kind, pick: rng.Int()})
	}

	p, _ := faultPool(t, remote.PoolConfig{Hosts: hosts, MaxPerHost: 4, Retries: 8,
		SSH: remote.SSHOptions{ConfigFile: lab8.ConfigFile}})
	allDone := make([]atomic.Int32, n)
	onFailure := make([]atomic.Int32, n)
	start := time.Now()
	for i := range n {
		p.Submit(context.Background(), remote.Job{Func: FaultWork.Name(), Data: WorkIn{N: i, Mode: modes[i]}, Desc: strconv.Itoa(i),
			AllDone:   func() { allDone[i].Add(1) },
			OnFailure: func(error) { onFailure[i].Add(1) }})
	}

	var restarts sync.WaitGroup
	var drops, workerKills int
	inject := func(f fault) {
		switch f.kind {
		case "drop":
			srv := lab8.Servers[f.pick%len(lab8.Servers)]
			if !srv.Running() {
				return
			}
			if err := srv.Kill(); err != nil {
				t.Errorf("kill %s: %v", srv.Name, err)
				return
			}
			drops++
			restarts.Add(1)
			go func() {
				defer restarts.Done()
				time.Sleep(300 * time.Millisecond)
				if err := srv.Restart(); err != nil {
					t.Errorf("restart %s: %v", srv.Name, err)
				}
			}()
		case "worker-kill":
			ws := workersUnder(lab8.Dir)
			if len(ws) == 0 {
				return
			}
			if syscall.Kill(ws[f.pick%len(ws)], syscall.SIGKILL) == nil {
				workerKills++
			}
		}
	}

	seen := make([]int, n)
	outcomes := map[string]int{}
	killedUnder := 0
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	done, next := 0, 0
	for p.Pending() > 0 {
		run, err := p.Next(ctx)
		if err != nil {
			t.Fatalf("Next after %d outcomes: %v (pending %d, stats %+v)", done, err, p.Pending(), p.Stats().Total)
		}
		res, err := run.Wait()
		in := run.Job().Data.(WorkIn)
		seen[in.N]++
		done++
		var re *remote.RemoteError
		switch {
		case err == nil:
			var sq int
			if derr := res.Decode(&sq); derr != nil || sq != in.N*in.N || in.Mode != 0 {
				t.Errorf("job %d (mode %d): result %d, %v", in.N, in.Mode, sq, derr)
			}
			outcomes["ok"]++
		case errors.As(err, &re):
			outcomes["remote error: "+re.Kind]++
			switch {
			case in.Mode == 1 && re.Kind == remote.KindSignal && re.Signal == "killed":
			case in.Mode == 2 && re.Kind == remote.KindFunc && strings.Contains(re.Message, "on purpose"):
			case in.Mode == 0 && re.Kind == remote.KindSignal && re.Signal == "killed":
				killedUnder++
			default:
				t.Errorf("job %d (mode %d): %v", in.N, in.Mode, err)
			}
		case remote.IsFailure(err):
			outcomes["transport failure"]++
			t.Errorf("job %d failed in transport after %d attempts: %v", in.N, res.Attempts, err)
		default:
			outcomes["other"]++
			t.Errorf("job %d: unexpected error %v", in.N, err)
		}
		for next < len(faults) && done >= faults[next].at {
			inject(faults[next])
			next++
		}
	}
	restarts.Wait()
	took := time.Since(start)

	failures := 0
	for i := range n {
		if seen[i] != 1 || allDone[i].Load() != 1 {
			t.Errorf("job %d: %d outcomes, AllDone called %d times; want exactly one", i, seen[i], allDone[i].Load())
		}
		failures += int(onFailure[i].Load())
	}
	st := p.Stats()
	if failures != st.Total.Retried+outcomes["transport failure"] {
		t.Errorf("OnFailure called %d times, but %d attempts were retried and %d jobs failed in transport",
			failures, st.Total.Retried, outcomes["transport failure"])
	}
	if killedUnder > workerKills {
		t.Errorf("%d jobs lost their worker, but only %d workers were killed from outside", killedUnder, workerKills)
	}
	if st.Total.Submitted != n || st.Total.Running != 0 || st.Total.Queued != 0 {
		t.Errorf("stats: %+v", st.Total)
	}
	kinds := make([]string, 0, len(outcomes))
	for k := range outcomes {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	var summary strings.Builder
	for _, k := range kinds {
		fmt.Fprintf(&summary, "\n  %-40s %6d", k, outcomes[k])
	}
	t.Logf("%d jobs on %d hosts in %v (%.0f jobs/s); faults injected: %d connection drops, %d workers killed from outside"+
		"\n  %-40s %6d\n  %-40s %6d%s",
		n, len(hosts), took.Round(time.Millisecond), float64(n)/took.Seconds(), drops, workerKills,
		"attempts retried (OnFailure calls)", st.Total.Retried, "jobs whose worker was killed under them", killedUnder, summary.String())
}

// workersUnder lists the agent worker processes whose executable lies under
// dir (the agent cache of a lab's hosts), by pid.
func workersUnder(dir string) []int {
	var out []int
	for _, p := range liveProcs() {
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", p.pid))
		if err != nil || !strings.HasPrefix(exe, dir+"/") {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.pid))
		if bytes.Contains(cmdline, []byte("--toworker-agent\x00worker")) {
			out = append(out, p.pid)
		}
	}
	sort.Ints(out)
	return out
}

// ---------------------------------------------------------------------------
// A malicious host.

// frame encodes one frame with a raw header: length as claimed, kind byte
// as given (more bit included), then payload.
func frame(length uint32, kind byte, job uint32, payload []byte) []byte {
	b := []byte{byte(length >> 24), byte(length >> 16), byte(length >> 8), byte(length), kind,
		byte(job >> 24), byte(job >> 16), byte(job >> 8), byte(job)}
	return append(b, payload...)
}

func fullFrame(kind wire.Kind, job uint32, payload []byte) []byte {
	return frame(uint32(len(payload)), byte(kind), job, payload)
}

// splitStart is the payload of a split message's first frame: the size it
// announces, then data.
func splitStart(size int, data []byte) []byte {
	return append(binary.BigEndian.AppendUint64(nil, uint64(size)), data...)
}

// mustMessage encodes a message payload as the agent sends it.
func mustMessage(tb testing.TB, v any) []byte {
	b, err := wire.MarshalMessage(v)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func mustCBOR(tb testing.TB, v any) []byte {
	b, err := wire.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// warmAgentBinary makes sure the agent binary has been read, hashed and
// compressed (once per process) before a test measures allocations.
func warmAgentBinary(t *testing.T) {
	t.Helper()
	p, _ := faultPool(t, remote.PoolConfig{Hosts: []string{"h1"}})
	if _, err := remote.CallOn(context.Background(), p, "h1", Echo, []byte("warm")); err != nil {
		t.Fatal(err)
	}
	p.Kill()
}

// TestFaultMaliciousHostFrames has a host that plays the bootstrap honestly,
// takes the master's call, then sends hostile frames: each ends that
// connection with a clean *FailureError for the job, the master does not
// panic, and what it allocates meanwhile stays bounded.
func TestFaultMaliciousHostFrames(t *testing.T) {
	warmAgentBinary(t)
	nested := []byte{0xa1, 0x01} // {1: [[[…]]]} as a result
	nested = append(nested, bytes.Repeat([]byte{0x81}, 10000)...)
	nested = append(nested, 0x00)
	big := make([]byte, 1<<20)
	tests := []struct {
		name       string
		hello      wire.Hello // the agent's
		maxMessage int
		send       func(job uint32) []byte // nil: nothing after the hello
		is         error                   // errors.Is(err, is), or nil
		says       string                  // in the error
		op         string
		result     bool // a result frame that does not decode
	}{
		{name: "frame claiming 4 GiB", send: func(job uint32) []byte { return frame(0xffffffff, byte(wire.KindResult), job, nil) },
			is: wire.ErrFrameTooLarge, says: "4294967295", op: "run"},
		{name: "frame claiming 4 GiB on the connection", send: func(uint32) []byte { return frame(0xffffffff, byte(wire.KindStdout), 0, big) },
			is: wire.ErrFrameTooLarge, op: "run"},
		{name: "CBOR nested 10,000 deep", send: func(job uint32) []byte { return fullFrame(wire.KindResult, job, nested) },
			says: "nested", op: "run", result: true},
		{name: "map claiming a million keys", send: func(job uint32) []byte {
			return fullFrame(wire.KindResult, job, []byte{0xba, 0x00, 0x0f, 0x42, 0x40, 0x01, 0x02})
		}, says: "exceeded max number of key-value pairs", op: "run", result: true},
		{name: "array claiming 4 billion elements", send: func(job uint32) []byte {
			return fullFrame(wire.KindLog, job, []byte{0x9b, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x01})
		}, says: "exceeded max number of elements", op: "run"},
		{name: "byte string claiming 4 GiB", send: func(job uint32) []byte {
			return fullFrame(wire.KindCallback, job, []byte{0xa2, 0x01, 0x01, 0x03, 0x5b, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x00})
		}, says: "unexpected EOF", op: "run"},
		{name: "message announcing more than MaxMessage", maxMessage: 2 << 20, send: func(job uint32) []byte {
			return fullFrame(wire.KindCallback|0x80, job, splitStart(3<<20, big[:512<<10]))
		}, is: wire.ErrMessageTooLarge, says: "announces", op: "run"},
		{name: "message over what it announced", maxMessage: 2 << 20, send: func(job uint32) []byte {
			b := fullFrame(wire.KindCallback|0x80, job, splitStart(1<<20, big[:512<<10]))
			return append(b, fullFrame(wire.KindCallback, job, big)...)
		}, says: "longer than", op: "run"},
		{name: "partial messages over the cap across jobs", maxMessage: 2 << 20, send: func(job uint32) []byte {
			var b []byte
			for j := range uint32(5) {
				b = append(b, fullFrame(wire.KindLog|0x80, job+j, splitStart(3<<19, big[:512<<10]))...)
			}
			return b
		}, is: wire.ErrMessageTooLarge, says: "partial", op: "run"},
		{name: "split message without its size", send: func(job uint32) []byte {
			return fullFrame(wire.KindResult|0x80, job, []byte{1, 2, 3})
		}, says: "no size", op: "run"},
		{name: "truncated frame", send: func(job uint32) []byte { return frame(1000, byte(wire.KindResult), job, []byte("short")) },
			says: "unexpected EOF", op: "run"},
		{name: "unknown frame kind", send: func(job uint32) []byte { return frame(0, 99, job, nil) },
			is: wire.ErrUnknownKind, op: "run"},
		{name: "more bit on an output frame", send: func(job uint32) []byte { return fullFrame(wire.KindStdout|0x80, job, []byte("x")) },
			says: "more bit", op: "run"},
		{name: "a call frame from the host", send: func(job uint32) []byte {
			return fullFrame(wire.KindCall, job, mustCBOR(t, &wire.Call{Func: "x"}))
		}, says: "unexpected call frame", op: "run"},
		{name: "result that is not CBOR", send: func(job uint32) []byte { return fullFrame(wire.KindResult, job, []byte{0xff, 0xff}) },
			op: "run", result: true},
		{name: "wrong protocol version in hello", hello: wire.Hello{Version: wire.Version + 1}, says: "version", op: "bootstrap"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ready := make(chan uint32, 1)
			fire := make(chan []byte, 1)
			_, config := faultHost(t, "evil", faultssh.Options{Exec: func(cmd string, ch ssh.Channel) uint32 {
				a, err := faultssh.AcceptAgent(ch, tt.hello)
				if err != nil {
					return 1
				}
				if tt.send != nil {
					job, _, err := a.NextCall(nil)
					if err != nil {
						return 1
					}
					ready <- job
					select {
					case b := <-fire:
						a.WriteRaw(b)
					case <-time.After(30 * time.Second): // the test gave up
						return 1
					}
					if tt.name == "truncated frame" {
						return 0 // and close the channel mid-frame
					}
				}
				for { // until the master hangs up
					if _, _, err := a.Next(); err != nil {
						return 0
					}
				}
			}})
			p, out := faultPool(t, remote.PoolConfig{Hosts: []string{"evil"}, ConnectTimeout: 10 * time.Second,
				MaxMessage: tt.maxMessage, SSH: remote.SSHOptions{ConfigFile: config}})
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			before := ms.TotalAlloc
			run := p.Submit(context.Background(), remote.Job{Func: Noop.Name(), NoRetry: true, Timeout: 2 * time.Second})
			if tt.send != nil {
				var job uint32
				select {
				case job = <-ready:
				case <-time.After(10 * time.Second):
					t.Fatal("the master sent no call to the malicious host")
				}
				hostile := tt.send(job) // built before measuring: the host is in this process
				runtime.ReadMemStats(&ms)
				before = ms.TotalAlloc
				fire <- hostile
			}
			_, err := waitRun(t, run, 30*time.Second)
			runtime.ReadMemStats(&ms)
			alloc := ms.TotalAlloc - before
			var fe *remote.FailureError
			if !errors.As(err, &fe) || fe.Host != "evil" || fe.Op != tt.op {
				t.Fatalf("err = %v (%T), want a *FailureError of op %q for host evil", err, err, tt.op)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("err = %v, want it to wrap %v", err, tt.is)
			}
			if !strings.Contains(err.Error(), tt.says) {
				t.Errorf("err = %v, want it to say %q", err, tt.says)
			}
			if alloc > 64<<20 {
				t.Errorf("the master allocated %d MiB handling the hostile input, want < 64 MiB", alloc>>20)
			}
			if s := out.String(); s != "" {
				t.Errorf("hostile input reached the output: %.200q", s)
			}
			t.Logf("allocated %d KiB; %v", alloc>>10, err)
		})
	}
}

// TestFaultMaliciousBootstrap: a host that misbehaves before the agent
// starts (endless chatter, a platform nobody has an agent for, a failure
// line, a first frame that is not a hello, a marker of another version)
// fails the connection with a clear error and bounded allocation.
func TestFaultMaliciousBootstrap(t *testing.T) {
	warmAgentBinary(t)
	readPreamble := func(ch ssh.Channel) *bufio.Reader {
		br := bufio.NewReader(ch)
		br.ReadString('\n')
		return br
	}
	tests := []struct {
		name string
		exec func(ch ssh.Channel)
		says string
	}{
		{"endless chatter before the agent", func(ch ssh.Channel) {
			line := append(bytes.Repeat([]byte("motd "), 1000), '\n')
			for range 1000 {
				if _, err := ch.Write(line); err != nil {
					return
				}
			}
		}, "unexpected output before the agent started"},
		{"chatter without a newline", func(ch ssh.Channel) {
			junk := bytes.Repeat([]byte("x"), 64<<10)
			for range 100 {
				if _, err := ch.Write(junk); err != nil {
					return
				}
			}
		}, "unexpected output before the agent started"},
		{"asks for an unknown platform", func(ch ssh.Channel) {
			br := readPreamble(ch)
			io.WriteString(ch, wire.NeedPrefix+"Plan9 mips\n")
			br.ReadString('\n')
		}, "no agent binary for platform"},
		{"says it failed", func(ch ssh.Channel) {
			readPreamble(ch)
			io.WriteString(ch, wire.FailPrefix+"disk full\n")
		}, "disk full"},
		{"first frame is not a hello", func(ch ssh.Channel) {
			readPreamble(ch)
			io.WriteString(ch, wire.AgentMarker+"\n")
			ch.Write(fullFrame(wire.KindResult, 1, mustMessage(t, &wire.Result{})))
		}, "not hello"},
		{"marker of another version", func(ch ssh.Channel) {
			readPreamble(ch)
			io.WriteString(ch, wire.AgentMarkerPrefix+"99\n")
		}, "another version"},
		{"terminal escapes in what it says", func(ch ssh.Channel) {
			readPreamble(ch)
			io.WriteString(ch, "\x1b]0;owned\x07\x1b[2J said on stdout\n")
			io.WriteString(ch.Stderr(), "\x1b[31m said on stderr\r\n")
			ch.CloseWrite()
		}, "said on stderr"},
		{"terminal escapes in a failure line", func(ch ssh.Channel) {
			readPreamble(ch)
			io.WriteString(ch, wire.FailPrefix+"\x1b[2Jdisk full\n")
		}, "disk full"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, config := faultHost(t, "evil", faultssh.Options{Exec: func(cmd string, ch ssh.Channel) uint32 {
				tt.exec(ch)
				io.Copy(io.Discard, ch)
				return 1
			}})
			p, _ := faultPool(t, remote.PoolConfig{Hosts: []string{"evil"}, ConnectTimeout: 10 * time.Second,
				SSH: remote.SSHOptions{ConfigFile: config}})
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			before := ms.TotalAlloc
			_, err := waitRun(t, p.Submit(context.Background(), remote.Job{Func: Noop.Name(), NoRetry: true}), 30*time.Second)
			runtime.ReadMemStats(&ms)
			var fe *remote.FailureError
			if !errors.As(err, &fe) || fe.Op != "bootstrap" || !strings.Contains(err.Error(), tt.says) {
				t.Fatalf("err = %v, want a bootstrap *FailureError saying %q", err, tt.says)
			}
			if alloc := ms.TotalAlloc - before; alloc > 64<<20 {
				t.Errorf("allocated %d MiB", alloc>>20)
			}
			if strings.ContainsAny(err.Error(), "\x1b\x07\r") {
				t.Errorf("the error passes the host's control characters on to the user's terminal: %q", err)
			}
			t.Logf("%v", err)
		})
	}
}

// TestFaultMaliciousHostCannotRunAnything: a host can only ask for the
// job's own callbacks by name. Frames for jobs the master never started, a
// callback the job did not register, callback input that does not decode
// and a result that does not fit the caller's type are each refused or
// reported to the job, and the connection lives on for the next job.
func TestFaultMaliciousHostCannotRunAnything(t *testing.T) {
	replies := make(chan *wire.CallbackReply, 8)
	str := func(s string) []byte { return mustCBOR(t, s) }
	srv, config := faultHost(t, "evil", faultssh.Options{Exec: func(cmd string, ch ssh.Channel) uint32 {
		a, err := faultssh.AcceptAgent(ch, wire.Hello{})
		if err != nil {
			return 1
		}
		job, _, err := a.NextCall(nil)
		if err != nil {
			return 1
		}
		// Frames of a job that does not exist.
		a.WriteFrame(wire.Frame{Kind: wire.KindStdout, Job: 999, Payload: []byte("ghost output\n")})
		a.WriteValue(wire.KindCallback, 999, &wire.CallbackRequest{Seq: 1, Name: "progress", Data: str("ghost")})
		a.WriteValue(wire.KindResult, 999, &wire.Result{Data: str("ghost")})
		// A callback the job did not register, and input that does not fit.
		a.WriteValue(wire.KindCallback, job, &wire.CallbackRequest{Seq: 2, Name: "rm -rf /", Data: str("x")})
		a.WriteValue(wire.KindCallback, job, &wire.CallbackRequest{Seq: 3, Name: "progress", Data: str("not a Progress")})
		for got := 0; got < 2; {
			f, v, err := a.Next()
			if err != nil {
				return 1
			}
			if rep, ok := v.(*wire.CallbackReply); ok && f.Job == job {
				replies <- rep
				got++
			}
		}
		a.WriteValue(wire.KindResult, job, &wire.Result{Data: str("a string, not a CountOut")})
		job2, _, err := a.NextCall(nil)
		if err != nil {
			return 1
		}
		a.WriteValue(wire.KindResult, job2, &wire.Result{Data: mustCBOR(t, 42)})
		for {
			if _, _, err := a.Next(); err != nil {
				return 0
			}
		}
	}})
	p, out := faultPool(t, remote.PoolConfig{Hosts: []string{"evil"}, SSH: remote.SSHOptions{ConfigFile: config}})
	var progressCalls atomic.Int32
	res, err := waitRun(t, p.Submit(context.Background(), remote.Job{Func: Count.Name(), Desc: "victim",
		OnOutput: func(l string) { t.Errorf("another job's output delivered to this one: %q", l) },
		Callbacks: map[string]remote.Callback{"progress": func(ctx context.Context, req remote.CallbackRequest) (any, error) {
			progressCalls.Add(1)
			var pr Progress
			if err := req.Decode(&pr); err != nil {
				return nil, err
			}
			return "ack", nil
		}}}), 30*time.Second)
	if err != nil {
		t.Fatalf("job: %v", err)
	}
	bySeq := map[uint64]*wire.CallbackReply{}
	for range 2 {
		r := <-replies
		bySeq[r.Seq] = r
	}
	if r := bySeq[2]; r == nil || r.Err == nil || r.Err.Kind != "unknown-callback" || !strings.Contains(r.Err.Message, `"rm -rf /"`) {
		t.Errorf("reply to an unregistered callback: %+v", r)
	}
	if r := bySeq[3]; r == nil || r.Err == nil || !strings.Contains(r.Err.Message, "decode input") {
		t.Errorf("reply to undecodable callback input: %+v", r)
	}
	if n := progressCalls.Load(); n != 1 {
		t.Errorf("the registered callback ran %d times, want 1 (the ghost job's request must not reach it)", n)
	}
	var co CountOut
	if err := res.Decode(&co); err == nil || !strings.Contains(err.Error(), "CountOut") {
		t.Errorf("Decode of a result that does not fit: %v, want an error naming the type", err)
	}
	var s string
	if err := res.Decode(&s); err != nil || s != "a string, not a CountOut" {
		t.Errorf("Decode into the right type: %q, %v", s, err)
	}
	// The connection lives: the next job runs on it.
	n, err := remote.CallOn(context.Background(), p, "evil", Square, 3)
	if err != nil || n != 42 {
		t.Errorf("next job: %d, %v", n, err)
	}
	if srv.Accepted() != 1 || srv.Execs() != 1 {
		t.Errorf("%d connections, %d bootstraps; want the first connection to live on", srv.Accepted(), srv.Execs())
	}
	if strings.Contains(out.String(), "ghost") {
		t.Errorf("a ghost job's output was printed: %q", out.String())
	}
}

// ---------------------------------------------------------------------------
// Bad input through a real agent.

// TestFaultBadInputConnectionLives: data that does not fit the function's
// input type, a callback the master did not register, a callback reply that
// does not decode, callback input the handler cannot decode, a reply that
// cannot be encoded and a panicking handler each give the job a clear error,
// and the same connection runs the next job.
func TestFaultBadInputConnectionLives(t *testing.T) {
	p, _ := faultPool(t, remote.PoolConfig{Hosts: []string{"h2"}, MaxPerHost: 1})
	if _, err := remote.CallOn(context.Background(), p, "h2", Echo, []byte("warm")); err != nil {
		t.Fatal(err)
	}
	st0, t0 := p.Stats().Hosts["h2"], time.Now()
	callbacks := map[string]remote.Callback{
		"wrong-reply": func(context.Context, remote.CallbackRequest) (any, error) { return "a string, not struct{N int}", nil },
		"strict": func(ctx context.Context, req remote.CallbackRequest) (any, error) {
			var pr Progress
			return nil, req.Decode(&pr)
		},
		"unencodable": func(context.Context, remote.CallbackRequest) (any, error) { return make(chan int), nil },
		"panics":      func(context.Context, remote.CallbackRequest) (any, error) { panic("handler bug") },
	}
	tests := []struct {
		name string
		job  remote.Job
		kind string
		says []string
	}{
		{"data that does not fit the input type", remote.Job{Func: Count.Name(), Data: "not a CountIn"},
			remote.KindDecode, []string{"CountIn"}},
		{"callback the master did not register", remote.Job{Func: FaultCallback.Name(), Data: CbIn{Name: "nosuch"}},
			remote.KindFunc, []string{"unknown-callback", `"nosuch"`}},
		{"callback reply that does not decode", remote.Job{Func: FaultCallback.Name(), Data: CbIn{Name: "wrong-reply"}},
			remote.KindFunc, []string{"kind decode", "does not decode"}},
		{"callback input the handler cannot decode", remote.Job{Func: FaultCallback.Name(), Data: CbIn{Name: "strict", Send: 7}},
			remote.KindFunc, []string{"decode input", "Progress"}},
		{"callback reply that cannot be encoded", remote.Job{Func: FaultCallback.Name(), Data: CbIn{Name: "unencodable"}},
			remote.KindFunc, []string{"encode reply"}},
		{"callback handler that panics", remote.Job{Func: FaultCallback.Name(), Data: CbIn{Name: "panics"}},
			remote.KindFunc, []string{"kind panic", "handler bug"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			job := tt.job
			job.Desc, job.Callbacks = tt.name, callbacks
			_, err := waitRun(t, p.Submit(context.Background(), job), 30*time.Second)
			var re *remote.RemoteError
			if !errors.As(err, &re) || re.Kind != tt.kind {
				t.Fatalf("err = %v, want a *RemoteError of kind %q", err, tt.kind)
			}
			for _, s := range tt.says {
				if !strings.Contains(re.Message, s) {
					t.Errorf("message %q does not say %q", re.Message, s)
				}
			}
			if got, err := remote.CallOn(context.Background(), p, "h2", Square, 5); err != nil || got != 25 {
				t.Fatalf("next job on the connection: %d, %v", got, err)
			}
		})
	}
	st1 := p.Stats().Hosts["h2"]
	if st1.Connected < st0.Connected+time.Since(t0)-100*time.Millisecond || st1.Retried != 0 || st1.Uploads != st0.Uploads {
		t.Errorf("the connection did not live through bad input: before %+v, after %+v", st0, st1)
	}
}

// ---------------------------------------------------------------------------
// Fuzzing the master's decoding of what a host sends.

// withData returns v (a remote.Result or remote.CallbackRequest) with its
// unexported CBOR payload set to b, as the master's reader sets it from a
// host's frame. The field is reached by reflection because only the
// connection's reader may set it; if it is renamed, the fuzz tests fail
// here and must be updated.
func withData[T any](tb testing.TB, v T, b []byte) T {
	f := reflect.ValueOf(&v).Elem().FieldByName("data")
	if !f.IsValid() {
		tb.Fatalf("%T has no field data", v)
	}
	reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem().SetBytes(b)
	return v
}

// decodeTargets are typed values a program decodes hostile data into.
func decodeTargets() []any {
	return []any{
		new(any), new(CountOut), new(CountIn), new([]byte), new(string), new(int64), new(float64), new(bool),
		new([]int), new([]string), new([]any), new(map[string]int), new(map[int][]string), new(map[string]any),
		new(agent.ExecOut), new(Progress), new(*CountOut), new(struct {
			A []map[string][]byte
			B *struct{ C []*int }
		}), new(time.Time),
	}
}

// decodeBounded decodes b with decode into every target; it fails if the
// decoding allocates more than a bound proportional to the input.
func decodeBounded(t *testing.T, b []byte, decode func(v any) error) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	before := ms.TotalAlloc
	for _, v := range decodeTargets() {
		decode(v) // errors are fine; panics and runaway allocation are not
	}
	runtime.ReadMemStats(&ms)
	if alloc, bound := ms.TotalAlloc-before, uint64(16<<20+256*len(b)); alloc > bound {
		t.Errorf("decoding %d bytes allocated %d bytes (bound %d)", len(b), alloc, bound)
	}
}

// FuzzResultDecode feeds hostile bytes to the master's handling of a
// result: as a whole result message, as the connection's reader decodes
// it, then (when that succeeds, and also directly) as result data that
// Result.Decode turns into the caller's type. Seeds are in
// testdata/fuzz/FuzzResultDecode.
func FuzzResultDecode(f *testing.F) {
	f.Add(mustMessage(f, &wire.Result{Data: mustCBOR(f, CountOut{N: 3, Cwd: "/", Acks: []string{"a"}})}))
	f.Fuzz(func(t *testing.T, b []byte) {
		decodeBounded(t, b, func(v any) error { return withData(t, remote.Result{}, b).Decode(v) })
		if v, err := wire.Decode(wire.KindResult, b); err == nil {
			data := v.(*wire.Result).Data
			decodeBounded(t, data, func(v any) error { return withData(t, remote.Result{}, data).Decode(v) })
		}
	})
}

// FuzzCallbackRequest does the same for a callback request: the message as
// the reader decodes it, then its input as CallbackRequest.Decode decodes
// it for a handler. Seeds are in testdata/fuzz/FuzzCallbackRequest.
func FuzzCallbackRequest(f *testing.F) {
	f.Add(mustCBOR(f, &wire.CallbackRequest{Seq: 1, Name: "progress", Data: mustCBOR(f, Progress{Done: 1, Of: 2})}))
	f.Fuzz(func(t *testing.T, b []byte) {
		decodeBounded(t, b, func(v any) error { return withData(t, remote.CallbackRequest{Name: "fuzz"}, b).Decode(v) })
		if v, err := wire.Decode(wire.KindCallback, b); err == nil {
			req := v.(*wire.CallbackRequest)
			decodeBounded(t, req.Data, func(v any) error {
				return withData(t, remote.CallbackRequest{Name: req.Name}, req.Data).Decode(v)
			})
		}
	})
}

// ---------------------------------------------------------------------------
// Security.

// TestFaultChangedHostKeyRefused: a host whose key differs from the one in
// known_hosts is refused, with the key's fingerprint in the error, even
// with StrictHostKeyChecking=no.
func TestFaultChangedHostKeyRefused(t *testing.T) {
	srv := lab.Server("h1")
	other := freshKey(t)
	kh := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(kh, []byte(knownhosts.Line([]string{srv.Addr()}, other)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fp := ssh.FingerprintSHA256(srv.HostKey)
	for _, strict := range []string{"yes", "no"} {
		t.Run("StrictHostKeyChecking="+strict, func(t *testing.T) {
			var warn lockedBuf
			p, _ := faultPool(t, remote.PoolConfig{Hosts: []string{"h1"}, SSH: remote.SSHOptions{Warn: &warn,
				Options: []string{"UserKnownHostsFile=" + kh, "StrictHostKeyChecking=" + strict}}})
			failures := 0
			_, err := waitRun(t, p.Submit(context.Background(), remote.Job{Func: Noop.Name(), NoRetry: true,
				OnFailure: func(error) { failures++ }}), 30*time.Second)
			var fe *remote.FailureError
			var hk *sshdial.HostKeyError
			if !errors.As(err, &fe) || fe.Op != "connect" || !errors.As(err, &hk) || !hk.Known {
				t.Fatalf("err = %v, want a connect *FailureError wrapping a changed-key *HostKeyError", err)
			}
			if !strings.Contains(err.Error(), fp) || !strings.Contains(err.Error(), "CHANGED") || hk.Fingerprint != fp {
				t.Errorf("error does not show the host's fingerprint %s: %v", fp, err)
			}
			if failures != 1 {
				t.Errorf("OnFailure called %d times", failures)
			}
		})
	}
}

// freshKey returns a new public key that no host has.
func freshKey(t *testing.T) ssh.PublicKey {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestFaultStrictHostKeyCheckingNoWarns: with StrictHostKeyChecking=no an
// unknown host key is accepted, but every connection says so on
// SSHOptions.Warn, with the fingerprint.
func TestFaultStrictHostKeyCheckingNoWarns(t *testing.T) {
	empty := filepath.Join(t.TempDir(), "known_hosts")
	os.WriteFile(empty, nil, 0o600)
	var warn lockedBuf
	const conns = 2
	for i := range conns {
		p, _ := faultPool(t, remote.PoolConfig{Hosts: []string{"h2"}, SSH: remote.SSHOptions{Warn: &warn,
			Options: []string{"UserKnownHostsFile=" + empty, "StrictHostKeyChecking=no"}}})
		if _, err := remote.CallOn(context.Background(), p, "h2", Square, i); err != nil {
			t.Fatal(err)
		}
		p.Close()
	}
	fp := ssh.FingerprintSHA256(lab.Server("h2").HostKey)
	if n := strings.Count(warn.String(), fp); n != conns {
		t.Errorf("%d connections, %d warnings naming %s:\n%s", conns, n, fp, warn.String())
	}
	if !strings.Contains(warn.String(), "not verified") {
		t.Errorf("warning does not say the key is not verified: %q", warn.String())
	}
}

// captureStderr points fd 2 at a pipe until the returned function is
// called; that function restores fd 2, copies what was captured to it, and
// returns it.
func captureStderr(t *testing.T) func() string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved, err := unix.Dup(2)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Dup2(int(w.Fd()), 2); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	done := make(chan struct{})
	go func() { io.Copy(&buf, r); close(done) }()
	var once sync.Once
	restore := func() string {
		once.Do(func() {
			unix.Dup2(saved, 2)
			unix.Close(saved)
			w.Close()
			<-done
			r.Close()
			os.Stderr.Write(buf.Bytes())
		})
		return buf.String()
	}
	t.Cleanup(func() { restore() })
	return restore
}

// TestFaultNoSecretInLogs runs jobs whose data holds a marker with every
// log the master has turned up to debug (the pool's logger and
// slog.Default), and captures the pool's Stdout/Stderr, SSH warnings, the
// process's own stderr and the host's sshd log: the marker appears only in
// the function's own output (which it prints on purpose) and in the
// callback that receives it; key material appears nowhere.
func TestFaultNoSecretInLogs(t *testing.T) {
	secret := "MARKER-" + strconv.FormatUint(rand.Uint64(), 36)
	key, err := os.ReadFile(lab.IdentityFile)
	if err != nil {
		t.Fatal(err)
	}
	var keyLines []string
	for _, l := range strings.Split(string(key), "\n") {
		if len(l) >= 16 && !strings.HasPrefix(l, "-----") {
			keyLines = append(keyLines, l)
		}
	}
	var logs lockedBuf
	lg := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug, AddSource: true}))
	prev := slog.Default()
	slog.SetDefault(lg)
	defer slog.SetDefault(prev)
	stderr := captureStderr(t)

	var warn lockedBuf
	p, out := faultPool(t, remote.PoolConfig{Hosts: []string{"h3"}, Logger: lg, SSH: remote.SSHOptions{Warn: &warn}})
	var own []string
	var seen string
	res, err := waitRun(t, p.Submit(context.Background(), remote.Job{Func: FaultSecret.Name(), Data: SecretIn{Secret: secret},
		Desc: "secret job", OnOutput: func(l string) { own = append(own, l) },
		Callbacks: map[string]remote.Callback{"seen": func(ctx context.Context, req remote.CallbackRequest) (any, error) {
			return "ok", req.Decode(&seen)
		}}}), 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var errs []string
	for _, job := range []remote.Job{
		{Func: Count.Name(), Data: SecretIn{Secret: secret}, Desc: "does not decode"},
		{Func: FaultSecret.Name(), Data: SecretIn{Secret: secret}, Desc: "callback missing"},
		{Func: FaultSecret.Name(), Data: SecretIn{Secret: secret}, Desc: "times out", Timeout: time.Nanosecond},
	} {
		job.OnOutput = func(string) {} // the function's own output, which holds the marker
		_, err := waitRun(t, p.Submit(context.Background(), job), 30*time.Second)
		if err == nil {
			t.Errorf("%s: no error", job.Desc)
			continue
		}
		errs = append(errs, err.Error())
	}
	p.Close()
	captured := stderr()

	if len(own) != 1 || own[0] != "own output: "+secret || seen != secret {
		t.Fatalf("the function's own output %q and callback %q should carry the marker", own, seen)
	}
	var n int
	if res.Decode(&n); n != len(secret) {
		t.Errorf("result %d", n)
	}
	if !strings.Contains(logs.String(), "debug record") {
		t.Fatalf("the debug logger captured nothing: %q", logs.String())
	}
	for what, s := range map[string]string{
		"log records":             logs.String(),
		"pool Stdout/Stderr":      out.String(),
		"SSH warnings":            warn.String(),
		"the master's stderr":     captured,
		"errors":                  strings.Join(errs, "\n"),
		"the host's sshd log":     lab.Server("h3").Log(),
		"the job's result errors": fmt.Sprint(res.Err),
	} {
		if strings.Contains(s, secret) {
			t.Errorf("the job's data appears in %s:\n%s", what, s)
		}
		for _, kl := range keyLines {
			if strings.Contains(s, kl) {
				t.Errorf("private key material appears in %s", what)
				break
			}
		}
	}
}

// TestFaultBossStopped: the boss stopped by a signal on the host.
// Killed with SIGKILL, it cannot clean up: the kernel signals its workers
// (PR_SET_PDEATHSIG), each kills its own process group, and the master
// sees the connection end. Sent SIGTERM (a host shutting down), it kills
// its workers and their children itself and tells the master why, whose
// failure names the signal. Either way the job is a transport failure
// (retried on another host when it may be), and the next job to that
// host connects again.
func TestFaultBossStopped(t *testing.T) {
	for _, tt := range []struct {
		sig  syscall.Signal
		says string
	}{
		{syscall.SIGKILL, "connection lost"},
		{syscall.SIGTERM, "the agent said bye: stopped by SIGTERM on the host"},
	} {
		t.Run(unix.SignalName(tt.sig), func(t *testing.T) {
			p, _, _ := newPool(t, remote.PoolConfig{Hosts: []string{"h4"}})
			pids := make(chan string, 1)
			run := p.Submit(context.Background(), remote.Job{Host: "h4", Func: Sleep.Name(), Data: 60, Timeout: -1, NoRetry: true,
				OnOutput: func(l string) { pids <- l }})
			var worker, child int
			select {
			case l := <-pids:
				fmt.Sscanf(l, "pids %d %d", &worker, &child)
			case <-time.After(30 * time.Second):
				t.Fatal("the job printed no pids")
			}
			boss := parentPID(worker)
			if boss <= 1 || worker == 0 || child == 0 {
				t.Fatalf("boss %d, worker %d, child %d", boss, worker, child)
			}
			if err := syscall.Kill(boss, tt.sig); err != nil {
				t.Fatal(err)
			}
			waitGone(t, "the worker of a stopped boss", worker, 10*time.Second)
			waitGone(t, "the job's child of a stopped boss", child, 10*time.Second)
			waitGone(t, "a stopped boss", boss, 10*time.Second)
			_, err := waitRun(t, run, 30*time.Second)
			if !remote.IsFailure(err) {
				t.Fatalf("job on a stopped boss: %v, want a transport failure", err)
			}
			if !strings.Contains(err.Error(), tt.says) {
				t.Errorf("the failure does not say %q: %v", tt.says, err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := remote.CallOn(ctx, p, "h4", Echo, []byte("again")); err != nil {
				t.Errorf("a job after the agent was stopped: %v", err)
			}
		})
	}
}

// TestFaultAgentFileRemovedWhileRunning: the cache keeps KeepVersions
// agents, so a master uploading a newer build prunes an older one that
// another master's agents may still be running from (a developer
// rebuilding while a pool stays connected). Those agents must go on
// starting workers from the binary they run, whether its file was removed
// or replaced (then by something that was never verified, which must not
// run).
func TestFaultAgentFileRemovedWhileRunning(t *testing.T) {
	srv := lab.Server("h4")
	dir := filepath.Join(srv.CacheDir, "toworker")
	for _, replace := range []bool{false, true} {
		t.Run(map[bool]string{false: "removed", true: "replaced"}[replace], func(t *testing.T) {
			p, _, _ := newPool(t, remote.PoolConfig{Hosts: []string{"h4"}, MinWarm: -1})
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			if _, err := remote.CallOn(ctx, p, "h4", Echo, []byte("x")); err != nil {
				t.Fatal(err)
			}
			uploads := p.Stats().Total.Uploads
			connected := time.Now()
			mark := filepath.Join(t.TempDir(), "replacement-ran")
			ents, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			changed := 0
			for _, e := range ents {
				if len(e.Name()) != 64 {
					continue
				}
				f := filepath.Join(dir, e.Name())
				if err := os.Remove(f); err != nil {
					t.Fatal(err)
				}
				if replace {
					if err := os.WriteFile(f, []byte("#!/bin/sh\ntouch "+mark+"\n"), 0o700); err != nil {
						t.Fatal(err)
					}
				}
				changed++
			}
			if changed == 0 {
				t.Fatalf("no agent in %s: %v", dir, ents)
			}
			// The warm worker dies; the next call needs a new one, and so
			// do calls beside it.
			if _, err := remote.CallOn(ctx, p, "h4", FaultCrash, "exit-3"); err == nil {
				t.Fatal("the crash job did not fail")
			}
			runs := make([]*remote.Run, 3)
			for i := range runs {
				runs[i] = p.Submit(ctx, remote.Job{Host: "h4", Func: Echo.Name(), Data: []byte("y"), NoRetry: true})
			}
			for i, r := range runs {
				if _, err := r.Wait(); err != nil {
					t.Errorf("call %d after the agent's file was changed: %v", i, err)
				}
			}
			if st := p.Stats(); st.Total.Uploads != uploads || st.Hosts["h4"].Connected < time.Since(connected) {
				t.Errorf("connected for %v, %d more uploads: the connection was made again", st.Hosts["h4"].Connected, st.Total.Uploads-uploads)
			}
			if _, err := os.Stat(mark); err == nil {
				t.Error("the agent started a worker from the file that replaced it")
			}
		})
	}
}
