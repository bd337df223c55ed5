package remote_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/toworker/toworker/agent"
	"github.com/toworker/toworker/internal/sshdial"
	"github.com/toworker/toworker/internal/wire"
	"github.com/toworker/toworker/remote"
)

// lockedBuf is an io.Writer safe for concurrent use.
type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// newPool starts a pool on the lab's hosts whose output goes to buffers.
func newPool(t *testing.T, cfg remote.PoolConfig) (*remote.Pool, *lockedBuf, *lockedBuf) {
	t.Helper()
	var out, errb lockedBuf
	cfg.Stdout, cfg.Stderr = &out, &errb
	if cfg.SSH.ConfigFile == "" {
		cfg.SSH.ConfigFile = lab.ConfigFile
	}
	p, err := remote.NewPool(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Kill() })
	return p, &out, &errb
}

func TestDoRemoteJobEndToEnd(t *testing.T) {
	dir := t.TempDir()
	type state struct {
		mu    sync.Mutex
		calls []string
	}
	st := &state{}
	var outLines, errLines []string
	var mu sync.Mutex
	var whenDone, allDone, failures int
	run := remote.DoRemoteJob(context.Background(), remote.Job{
		Host:  "h1",
		Chdir: dir,
		Func:  Count.Name(),
		Data:  CountIn{Words: []string{"a", "b", "c"}, Sub: true},
		Desc:  "count words",
		WhenDone: func(r remote.Result) {
			mu.Lock()
			whenDone++
			mu.Unlock()
		},
		AllDone:   func() { mu.Lock(); allDone++; mu.Unlock() },
		OnFailure: func(error) { mu.Lock(); failures++; mu.Unlock() },
		OnOutput:  func(l string) { mu.Lock(); outLines = append(outLines, l); mu.Unlock() },
		OnError:   func(l string) { mu.Lock(); errLines = append(errLines, l); mu.Unlock() },
		Callbacks: map[string]remote.Callback{
			"progress": func(ctx context.Context, req remote.CallbackRequest) (any, error) {
				var p Progress
				if err := req.Decode(&p); err != nil {
					return nil, err
				}
				s := req.LocalData.(*state)
				s.mu.Lock()
				defer s.mu.Unlock()
				s.calls = append(s.calls, fmt.Sprintf("%d/%d", p.Done, p.Of))
				return fmt.Sprintf("ack %d", p.Done), nil
			},
		},
		LocalData: st,
	})
	res, err := run.Wait()
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	var out CountOut
	if err := res.Decode(&out); err != nil {
		t.Fatal(err)
	}
	if out.N != 3 || out.Cwd != dir {
		t.Errorf("result = %+v, want N=3 Cwd=%s", out, dir)
	}
	if strings.Join(out.Acks, ",") != "ack 1,ack 2" {
		t.Errorf("callback replies = %q", out.Acks)
	}
	if strings.Join(st.calls, ",") != "1/2,2/2" {
		t.Errorf("callbacks seen = %q", st.calls)
	}
	wantOut := []string{"word 0: a", "word 1: b", "word 2: c", "from-sub-out"}
	if strings.Join(outLines, "|") != strings.Join(wantOut, "|") {
		t.Errorf("stdout lines = %q, want %q", outLines, wantOut)
	}
	wantErr := []string{"counted 3", "from-sub-err"}
	if strings.Join(errLines, "|") != strings.Join(wantErr, "|") {
		t.Errorf("stderr lines = %q, want %q", errLines, wantErr)
	}
	if res.Host != "h1" || whenDone != 1 || allDone != 1 || failures != 0 {
		t.Errorf("host=%q whenDone=%d allDone=%d failures=%d", res.Host, whenDone, allDone, failures)
	}

	// The typed, synchronous form, on the connection kept warm.
	got, err := remote.Call(context.Background(), "h1", Echo, []byte("typed"))
	if err != nil || string(got) != "typed" {
		t.Fatalf("Call = %q, %v", got, err)
	}
}

func TestPrefixedOutput(t *testing.T) {
	p, out, errb := newPool(t, remote.PoolConfig{Hosts: []string{"h2"}})
	_, err := p.Submit(context.Background(), remote.Job{Host: "h2", Func: Count.Name(), Data: CountIn{Words: []string{"x"}, Sub: true},
		Callbacks: map[string]remote.Callback{"progress": func(context.Context, remote.CallbackRequest) (any, error) { return "ok", nil }}}).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := out.String(), "h2: word 0: x\nh2: from-sub-out\n"; got != want {
		t.Errorf("stdout = %q, want %q", got, want)
	}
	if got, want := errb.String(), "h2: counted 1\nh2: from-sub-err\n"; got != want {
		t.Errorf("stderr = %q, want %q", got, want)
	}
	_, err = p.Submit(context.Background(), remote.Job{Host: "h2", Prefix: "[web] ", Func: Sleep.Name(), Data: 0}).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "[web] pids ") {
		t.Errorf("custom prefix missing: %q", out.String())
	}
}

func TestStrayOutputNeverCorruptsFrames(t *testing.T) {
	p, out, errb := newPool(t, remote.PoolConfig{Hosts: []string{"h1"}})
	for i := range 3 {
		res, err := p.Submit(context.Background(), remote.Job{Host: "h1", Func: Stray.Name()}).Wait()
		if err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		var s string
		if err := res.Decode(&s); err != nil || s != "intact" {
			t.Fatalf("run %d: result %q, %v", i, s, err)
		}
	}
	for _, want := range []string{"h1: fmt.Println", "h1: os.Stdout", "h1: raw fd 1", "h1: from a goroutine", "h1: sub stdout", "h1: sub fd1"} {
		if strings.Count(out.String(), want+"\n") != 3 {
			t.Errorf("stdout has %q %d times, want 3:\n%s", want, strings.Count(out.String(), want+"\n"), out.String())
		}
	}
	for _, want := range []string{"h1: raw fd 2", "h1: builtin println", "h1: sub stderr"} {
		if strings.Count(errb.String(), want+"\n") != 3 {
			t.Errorf("stderr has %q %d times, want 3:\n%s", want, strings.Count(errb.String(), want+"\n"), errb.String())
		}
	}
	if strings.Contains(out.String(), "inherited") {
		t.Errorf("a subprocess with no Stdout set printed into the job's output")
	}
}

func TestErrors(t *testing.T) {
	p, _, _ := newPool(t, remote.PoolConfig{Hosts: []string{"h3"}, Retries: 2})
	tests := []struct {
		name     string
		job      remote.Job
		kind     string
		contains string
	}{
		{"function error", remote.Job{Func: Fail.Name(), Data: "disk full"}, remote.KindFunc, "disk full"},
		{"panic", remote.Job{Func: Panic.Name()}, remote.KindPanic, "assignment to entry in nil map"},
		{"os.Exit", remote.Job{Func: Exit.Name(), Data: 3}, remote.KindExit, "status 3"},
		{"unknown function", remote.Job{Func: "no.such.func"}, remote.KindUnknownFunc, `"no.such.func"`},
		{"bad chdir", remote.Job{Func: Noop.Name(), Chdir: "/no/such/dir"}, remote.KindChdir, "/no/such/dir"},
		{"data does not decode", remote.Job{Func: Echo.Name(), Data: map[string]int{"a": 1}}, remote.KindDecode, "[]uint8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			failures := 0
			job := tt.job
			job.Host, job.Desc = "h3", tt.name
			job.OnFailure = func(error) { failures++ }
			res, err := p.Submit(context.Background(), job).Wait()
			var re *remote.RemoteError
			if !errors.As(err, &re) {
				t.Fatalf("err = %v (%T), want *RemoteError", err, err)
			}
			if re.Kind != tt.kind || !strings.Contains(re.Message, tt.contains) {
				t.Errorf("kind=%q message=%q, want kind %q containing %q", re.Kind, re.Message, tt.kind, tt.contains)
			}
			if re.Host != "h3" || re.Desc != tt.name || !strings.Contains(err.Error(), "h3") || !strings.Contains(err.Error(), tt.name) {
				t.Errorf("error does not carry host and desc: %v", err)
			}
			if remote.IsFailure(err) || failures != 0 || res.Attempts != 1 {
				t.Errorf("a job's own error was treated as a failure: failures=%d attempts=%d", failures, res.Attempts)
			}
			if tt.kind == remote.KindPanic && !strings.Contains(re.Stack, "remote_test") {
				t.Errorf("panic stack does not show the function:\n%s", re.Stack)
			}
		})
	}
	// The host lives on after all of that.
	if _, err := p.Submit(context.Background(), remote.Job{Func: Noop.Name()}).Wait(); err != nil {
		t.Fatalf("host unusable after errors: %v", err)
	}
}

func TestAgentCache(t *testing.T) {
	srv := lab.Server("h4")
	os.RemoveAll(filepath.Join(srv.CacheDir, "toworker"))
	run := func() remote.PoolStats {
		p, _, _ := newPool(t, remote.PoolConfig{Hosts: []string{"h4"}})
		if _, err := remote.CallOn(context.Background(), p, "h4", Echo, []byte("x")); err != nil {
			t.Fatal(err)
		}
		st := p.Stats()
		p.Close()
		return st
	}
	if n := run().Total.Uploads; n != 1 {
		t.Fatalf("first run uploaded %d times, want 1", n)
	}
	if n := run().Total.Uploads; n != 0 {
		t.Fatalf("second run uploaded %d times, want 0 (cache not used)", n)
	}
	// The cache directory is private; the agent file is named by its hash.
	dir := filepath.Join(srv.CacheDir, "toworker")
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("cache dir %s: %v, mode %v", dir, err, fi.Mode())
	}
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	// ReadDir sorts: the cache's token, then the agent and its stamp.
	if len(names) != 3 || names[0] != ".id" || len(names[1]) != 64 || names[2] != names[1]+".ok" {
		t.Fatalf("cache holds %v, want its token (.id), one file named by its SHA-256 and its stamp", names)
	}
	names = names[1:]
	// A tampered agent is never executed: replace it with a script that
	// leaves a mark, with its old modification time, and connect again.
	cached := filepath.Join(dir, names[0])
	old, _ := os.Stat(cached)
	mark := filepath.Join(t.TempDir(), "tampered-ran")
	if err := os.WriteFile(cached, []byte("#!/bin/sh\ntouch "+mark+"\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(cached, old.ModTime(), old.ModTime())
	if n := run().Total.Uploads; n != 1 {
		t.Fatalf("after tampering uploaded %d times, want 1", n)
	}
	if _, err := os.Stat(mark); err == nil {
		t.Fatal("the tampered cache file was executed")
	}
}

// DoSleep starts a job on host that sleeps in a subprocess and reports the
// worker's and the subprocess's pids on stdout.
func DoSleep(host string) *remote.Run {
	return remote.DoRemoteJob(context.Background(), remote.Job{Host: host, Func: Sleep.Name(), Data: 300, Timeout: -1,
		OnOutput: func(l string) { fmt.Println(l) }})
}

func TestTimeoutKillsJobAndChildren(t *testing.T) {
	p, _, _ := newPool(t, remote.PoolConfig{Hosts: []string{"h2"}})
	pids := make(chan string, 1)
	start := time.Now()
	_, err := p.Submit(context.Background(), remote.Job{Host: "h2", Func: Sleep.Name(), Data: 300, Timeout: time.Second,
		OnOutput: func(l string) { pids <- l }}).Wait()
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, remote.ErrTimeout) {
		t.Fatalf("err = %v, want a timeout", err)
	}
	if time.Since(start) > 20*time.Second {
		t.Errorf("timeout took %v", time.Since(start))
	}
	var worker, sleeper int
	fmt.Sscanf(<-pids, "pids %d %d", &worker, &sleeper)
	waitGone(t, "timed-out worker", worker, 5*time.Second)
	waitGone(t, "timed-out job's sleep subprocess", sleeper, 5*time.Second)
	if _, err := p.Submit(context.Background(), remote.Job{Host: "h2", Func: Noop.Name()}).Wait(); err != nil {
		t.Fatalf("host unusable after a timeout: %v", err)
	}
	// Cancelling the context does the same.
	ctx, cancel := context.WithCancel(context.Background())
	run := p.Submit(ctx, remote.Job{Host: "h2", Func: Sleep.Name(), Data: 300,
		OnOutput: func(l string) { pids <- l }})
	fmt.Sscanf(<-pids, "pids %d %d", &worker, &sleeper)
	cancel()
	if _, err := run.Wait(); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	waitGone(t, "cancelled worker", worker, 5*time.Second)
	waitGone(t, "cancelled job's sleep subprocess", sleeper, 5*time.Second)
}

func TestMasterKilledLeavesNothing(t *testing.T) {
	exe, _ := os.Executable()
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), "TOWORKER_TEST_MASTER=h3")
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	sc := bufio.NewScanner(stdout)
	var worker, sleeper int
	got := make(chan bool, 1)
	go func() {
		for sc.Scan() {
			if n, _ := fmt.Sscanf(sc.Text(), "pids %d %d", &worker, &sleeper); n == 2 {
				got <- true
				return
			}
		}
		got <- false
	}()
	select {
	case ok := <-got:
		if !ok {
			t.Fatal("master helper ended without starting the job")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("master helper did not start the job within 30s")
	}
	boss := parentPID(worker)
	if boss <= 1 {
		t.Fatalf("cannot find the boss of worker %d", worker)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	waitGone(t, "boss", boss, 5*time.Second)
	waitGone(t, "worker", worker, 5*time.Second)
	waitGone(t, "job's subprocess", sleeper, 5*time.Second)
}

func parentPID(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	return ppidOfStat(string(b))
}

// ppidOfStat is the ppid field of a /proc/<pid>/stat line, or 0.
func ppidOfStat(s string) int {
	// After "pid (comm) ": state, ppid, …
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

func TestUnknownHostKeyRefused(t *testing.T) {
	empty := filepath.Join(t.TempDir(), "known_hosts")
	os.WriteFile(empty, nil, 0o600)
	p, _, _ := newPool(t, remote.PoolConfig{SSH: remote.SSHOptions{ConfigFile: lab.ConfigFile,
		Options: []string{"UserKnownHostsFile=" + empty}}})
	failures := 0
	_, err := p.Submit(context.Background(), remote.Job{Host: "h1", Func: Noop.Name(), NoRetry: true,
		OnFailure: func(error) { failures++ }}).Wait()
	var fe *remote.FailureError
	var hk *sshdial.HostKeyError
	if !errors.As(err, &fe) || !errors.As(err, &hk) {
		t.Fatalf("err = %v, want a *FailureError wrapping a host key error", err)
	}
	if failures != 1 || !strings.Contains(err.Error(), "SHA256:") {
		t.Errorf("failures=%d err=%v", failures, err)
	}
}

func TestBigPayloadRoundTrip(t *testing.T) {
	p, _, _ := newPool(t, remote.PoolConfig{Hosts: []string{"h1"}})
	in := make([]byte, 8<<20)
	rand.Read(in)
	out, err := remote.CallOn(context.Background(), p, "h1", Echo, in)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(in, out) {
		t.Fatal("8 MiB echo came back different")
	}
}

// Submit returns at once and the caller may reuse its buffer: a large
// []byte input is sent as it was when submitted, though the master sends
// CallOn's input from the caller's slice without copying it.
func TestSubmitKeepsInputAsSubmitted(t *testing.T) {
	p, _, _ := newPool(t, remote.PoolConfig{Hosts: []string{"h1"}, MaxPerHost: 1})
	// Hold the only slot so the job waits in the queue while the buffer
	// is overwritten.
	block := p.Submit(context.Background(), remote.Job{Host: "h1", Func: Sleep.Name(), Data: 1})
	buf := bytes.Repeat([]byte("a"), 1<<20)
	run := p.Submit(context.Background(), remote.Job{Host: "h1", Func: Echo.Name(), Data: buf})
	for i := range buf {
		buf[i] = 'b'
	}
	if _, err := block.Wait(); err != nil {
		t.Fatal(err)
	}
	res, err := run.Wait()
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	if err := res.Decode(&out); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, bytes.Repeat([]byte("a"), 1<<20)) {
		t.Fatal("the job got the buffer as changed after Submit, not as submitted")
	}
}

// The first frames travel with the exec in an environment variable where
// sshd accepts it (the lab's sshd has Debian's AcceptEnv LANG LC_*), and
// the agent removes the variable before anything else can see it: not its
// workers, not Inline functions, not commands.
func TestFirstFramesInEnvironmentStayPrivate(t *testing.T) {
	p, out, _ := newPool(t, remote.PoolConfig{Hosts: []string{"h2"}})
	ctx := context.Background()
	for _, fn := range []agent.Func[string, string]{Getenv, InlineGetenv} {
		v, err := remote.CallOn(ctx, p, "h2", fn, wire.EnvFrames)
		if err != nil {
			t.Fatal(err)
		}
		if v != "<unset>" {
			t.Errorf("%s sees %s=%.40q", fn.Name(), wire.EnvFrames, v)
		}
	}
	if _, err := remote.CallOn(ctx, p, "h2", agent.Exec, agent.ExecIn{Command: "echo ${" + wire.EnvFrames + "-unset}"}); err != nil {
		t.Fatal(err)
	}
	if s := out.String(); s != "h2: unset\n" {
		t.Errorf("a command sees %s: output %q", wire.EnvFrames, s)
	}
	if n := p.Stats().Hosts["h2"].EnvStarts; n != 1 {
		t.Errorf("EnvStarts = %d, want 1: the agent did not start on the frames sent with the exec", n)
	}
}
