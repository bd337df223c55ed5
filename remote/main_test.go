package remote_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/toworker/toworker/agent"
	"github.com/toworker/toworker/callback"
	"github.com/toworker/toworker/internal/sshdtest"
)

// The test binary is also the agent: toworker ships it to the test hosts.
var lab *sshdtest.Lab

func TestMain(m *testing.M) {
	agent.ServeIfAgent()
	if os.Getenv("TOWORKER_TEST_MASTER") != "" {
		masterHelper()
		return
	}
	var err error
	// AcceptEnv as in Debian's and Ubuntu's sshd_config, so that the agent
	// starts on the first frames sent with the exec (wire.EnvFrames);
	// bootstrap_test.go's labs do without, so the stdin path is tested too.
	lab, err = sshdtest.StartLab(sshdtest.LabOptions{Hosts: 4, ExtraConfig: []string{"AcceptEnv LANG LC_*"}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "start sshd lab:", err)
		os.Exit(1)
	}
	os.Setenv("HOME", lab.HomeDir)
	os.Unsetenv("SSH_AUTH_SOCK")
	code := m.Run()
	lab.Close()
	os.Exit(code)
}

type CountIn struct {
	Words []string
	Sub   bool // also print from a subprocess
}

type CountOut struct {
	N    int
	Cwd  string
	Acks []string
}

type Progress struct{ Done, Of int }

var Count = agent.Register("test.count", func(ctx context.Context, in CountIn) (CountOut, error) {
	out := CountOut{N: len(in.Words)}
	out.Cwd, _ = os.Getwd()
	for i, w := range in.Words {
		fmt.Printf("word %d: %s\n", i, w)
	}
	fmt.Fprintln(os.Stderr, "counted", len(in.Words))
	if in.Sub {
		cmd := exec.Command("/bin/sh", "-c", "echo from-sub-out; echo from-sub-err >&2")
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			return out, err
		}
	}
	for i := range 2 {
		var ack string
		if err := callback.Call(ctx, "progress", Progress{Done: i + 1, Of: 2}, &ack); err != nil {
			return out, err
		}
		out.Acks = append(out.Acks, ack)
	}
	return out, nil
})

var Fail = agent.Register("test.fail", func(ctx context.Context, msg string) (int, error) {
	return 0, errors.New(msg)
})

var Panic = agent.Register("test.panic", func(ctx context.Context, _ struct{}) (int, error) {
	var m map[string]int
	if ctx != nil {
		m = nil
	}
	m["boom"]++ //lint:ignore SA5000 a real runtime panic on purpose
	return 0, nil
})

var Exit = agent.Register("test.exit", func(ctx context.Context, code int) (int, error) {
	fmt.Println("about to exit")
	os.Exit(code)
	return 0, nil
})

var Echo = agent.Register("test.echo", func(ctx context.Context, b []byte) ([]byte, error) { return b, nil })

var Noop = agent.Register("test.noop", func(ctx context.Context, _ struct{}) (struct{}, error) { return struct{}{}, nil })

// SleepOut reports the processes a sleeping job started.
var Sleep = agent.Register("test.sleep", func(ctx context.Context, seconds int) (int, error) {
	cmd := exec.Command("sleep", strconv.Itoa(seconds))
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	fmt.Printf("pids %d %d\n", os.Getpid(), cmd.Process.Pid)
	cmd.Wait()
	return seconds, nil
})

// Stray prints from every place a job can, then returns a value that must
// arrive intact: output never shares the frame stream.
var Stray = agent.Register("test.stray", func(ctx context.Context, _ struct{}) (string, error) {
	fmt.Println("fmt.Println")
	os.Stdout.WriteString("os.Stdout\n")
	syscall.Write(1, []byte("raw fd 1\n"))
	syscall.Write(2, []byte("raw fd 2\n"))
	println("builtin println")
	done := make(chan struct{})
	go func() { fmt.Println("from a goroutine"); close(done) }()
	<-done
	cmd := exec.Command("/bin/sh", "-c", "echo sub stdout; echo sub stderr >&2; echo sub fd1 >/dev/fd/1")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.Run()
	cmd = exec.Command("/bin/sh", "-c", "echo inherited")
	// No Stdout set: /dev/null, as os/exec documents.
	cmd.Run()
	return "intact", nil
})

// masterHelper is a master process for the "master killed" test: it starts
// a sleeping job and waits to be killed.
func masterHelper() {
	host := os.Getenv("TOWORKER_TEST_MASTER")
	run := DoSleep(host)
	run.Wait()
	os.Exit(0)
}

func waitGone(t *testing.T, what string, pid int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if !processAlive(pid) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("%s (pid %d) still running after %v", what, pid, within)
}

// processAlive reports whether pid exists and is not a zombie.
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

var Square = agent.Register("test.square", func(ctx context.Context, n int) (int, error) { return n * n, nil })

// Nap sleeps for the given milliseconds, honouring ctx.
var Nap = agent.Register("test.nap", func(ctx context.Context, ms int) (int, error) {
	select {
	case <-time.After(time.Duration(ms) * time.Millisecond):
	case <-ctx.Done():
	}
	return ms, nil
})

// initRuns counts runs of InitWorker in this (worker) process.
var initRuns int

var InitWorker = agent.Register("test.init", func(ctx context.Context, _ struct{}) (struct{}, error) {
	initRuns++
	return struct{}{}, nil
})

var InitFail = agent.Register("test.initfail", func(ctx context.Context, _ struct{}) (struct{}, error) {
	return struct{}{}, errors.New("database unreachable")
})

var InitCount = agent.Register("test.initcount", func(ctx context.Context, _ struct{}) (int, error) { return initRuns, nil })

var Logs = agent.Register("test.logs", func(ctx context.Context, n int) (int, error) {
	lg := callback.Logger(ctx).With("worker", "w")
	for i := range n {
		lg.Info("step", "i", i)
	}
	return n, nil
})

var CascadeSquare = agent.Register("test.cascade", func(ctx context.Context, n int) (int, error) {
	var sq int
	err := agent.Cascade(ctx, Square.Name(), n, &sq)
	return sq + 1, err
})

var SlowSquare = agent.Register("test.slowsquare", func(ctx context.Context, n int) (int, error) {
	time.Sleep(10 * time.Millisecond)
	return n * n, nil
})

// InlineInfo runs in the boss (agent.Inline): it reports its pid and makes
// a callback.
var InlineInfo = agent.Register("test.inline", func(ctx context.Context, n int) ([]int, error) {
	var ack int
	if err := callback.Call(ctx, "double", n, &ack); err != nil {
		return nil, err
	}
	callback.Logger(ctx).Info("inline", "n", n)
	return []int{os.Getpid(), ack}, nil
}, agent.Inline())

var InlineNoop = agent.Register("test.inlinenoop", func(ctx context.Context, _ struct{}) (struct{}, error) {
	return struct{}{}, nil
}, agent.Inline())

var InlineSleep = agent.Register("test.inlinesleep", func(ctx context.Context, _ struct{}) (string, error) {
	<-ctx.Done()
	return "", ctx.Err()
}, agent.Inline())

// Getenv returns an environment variable of the worker, or "<unset>";
// InlineGetenv the same in the boss.
var (
	Getenv       = agent.Register("test.getenv", getenv)
	InlineGetenv = agent.Register("test.inlinegetenv", getenv, agent.Inline())
)

func getenv(ctx context.Context, name string) (string, error) {
	if v, ok := os.LookupEnv(name); ok {
		return v, nil
	}
	return "<unset>", nil
}

// Hold calls back "hold" and returns what the master answered.
var Hold = agent.Register("test.hold", func(ctx context.Context, _ struct{}) (string, error) {
	var s string
	err := callback.Call(ctx, "hold", nil, &s)
	return s, err
})
