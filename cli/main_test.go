package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/toworker/toworker/agent"
	"github.com/toworker/toworker/callback"
	"github.com/toworker/toworker/internal/sshdtest"
)

// The test binary is also the agent: the CLI ships it to the lab's hosts.
var lab *sshdtest.Lab

func TestMain(m *testing.M) {
	agent.ServeIfAgent()
	if args := os.Getenv("TOWORKER_TEST_MAIN"); args != "" {
		// The helper-process pattern: this process is the toworker command.
		var list []string
		if err := json.Unmarshal([]byte(args), &list); err != nil {
			panic(err)
		}
		os.Args = append([]string{"toworker"}, list...)
		Main()
	}
	var err error
	lab, err = sshdtest.StartLab(sshdtest.LabOptions{Hosts: 4, ExtraConfig: []string{"AcceptEnv LANG LC_*"}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "start sshd lab:", err)
		os.Exit(1)
	}
	os.Setenv("HOME", lab.HomeDir)
	os.Unsetenv("SSH_AUTH_SOCK")
	os.Unsetenv("WCOLL")
	code := m.Run()
	lab.Close()
	os.Exit(code)
}

// SumIn has plain field names: call's JSON keys match them regardless of
// case.
type SumIn struct {
	Words []string
	N     int
	Scale float64
	Inner struct{ Flag bool }
}

// SumOut is test.sum's result.
type SumOut struct {
	Count  int
	Joined string
	Scaled float64
	Flag   bool
}

var _ = agent.Register("test.sum", func(ctx context.Context, in SumIn) (SumOut, error) {
	fmt.Println("summing", len(in.Words))
	return SumOut{Count: len(in.Words) + in.N, Joined: strings.Join(in.Words, "+"), Scaled: in.Scale * 2, Flag: in.Inner.Flag}, nil
})

var _ = agent.Register("test.boom", func(ctx context.Context, msg string) (int, error) {
	return 0, errors.New(msg)
})

// hostileGet plays a malicious host in `get`: it sends names that try to
// leave the host's directory.
var _ = agent.Register("test.hostileget", func(ctx context.Context, in agent.GetIn) (agent.GetOut, error) {
	file := func(p, data string) agent.FileEntry {
		return agent.FileEntry{Path: p, Mode: 0o644, MTime: time.Now().UnixNano(), Size: int64(len(data)), Inline: true, Data: []byte(data)}
	}
	link := func(p, target string) agent.FileEntry {
		return agent.FileEntry{Path: p, Mode: uint32(os.ModeSymlink | 0o777), Link: target}
	}
	dir := func(p string) agent.FileEntry {
		return agent.FileEntry{Path: p, Mode: uint32(os.ModeDir | 0o755), MTime: time.Now().UnixNano()}
	}
	batches := [][]agent.FileEntry{
		{file("../../etc/x", "escaped"), file("/tmp/abs-x", "escaped")},
		{file("ok/../../x", "escaped"), file("a/./b", "escaped"), file("", "escaped")},
		{dir("tree"), file("tree/good.txt", "good"), link("tree/inlink", "good.txt"), link("tree/up", "../tree/good.txt")},
		{link("tree/out", "../../outside"), link("tree/abs", "/etc/passwd"), link("tree/sneaky", "sub/../../..")},
		{link("tree/dot", "."), file("tree/dot/through", "via a link")},
		{link("tree/evil", "../.."), file("tree/evil/x", "escaped")},
		{{Path: "tree/dev", Mode: uint32(os.ModeDevice | 0o644)}},
		{{Path: "tree/setuid", Mode: uint32(os.ModeSetuid | 0o755), Size: 2, Inline: true, Data: []byte("#!")}},
	}
	var out agent.GetOut
	for _, b := range batches {
		var reply agent.GetBeginOut
		if err := callback.Call(ctx, agent.CallbackGetBegin, agent.GetBeginIn{Entries: b}, &reply); err != nil {
			return out, err
		}
	}
	// A handle it was never given.
	err := callback.Call(ctx, agent.CallbackGetWrite, agent.GetWriteIn{Handle: 7, Data: []byte("x")}, nil)
	fmt.Println("write to a bad handle:", err)
	return out, nil
})

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

// result is one run of the CLI.
type result struct {
	code           int
	stdout, stderr string
}

// cli runs the command line (without the program name) against the lab,
// with -F pointing at the lab's ssh config.
func cli(t *testing.T, args ...string) result {
	t.Helper()
	return cliCtx(t, context.Background(), nil, args...)
}

func cliCtx(t *testing.T, ctx context.Context, stdin io.Reader, args ...string) result {
	t.Helper()
	var out, errb lockedBuf
	return cliTo(t, ctx, stdin, &out, &errb, args...)
}

func cliTo(t *testing.T, ctx context.Context, stdin io.Reader, out, errb *lockedBuf, args ...string) result {
	t.Helper()
	full := []string{"toworker"}
	if len(args) > 0 {
		full = append(full, args[0])
		if args[0] != "hosts" && args[0] != "version" && args[0] != "funcs" && args[0] != "help" {
			full = append(full, "-F", lab.ConfigFile)
		}
		full = append(full, args[1:]...)
	}
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	code := Run(ctx, full, stdin, out, errb)
	r := result{code: code, stdout: out.String(), stderr: errb.String()}
	if testing.Verbose() {
		t.Logf("%q -> %d\nstdout:\n%s\nstderr:\n%s", args, code, r.stdout, r.stderr)
	}
	return r
}

// lines returns the lines of s, without a final empty one.
func lines(s string) []string {
	s = strings.TrimSuffix(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// has reports whether s has the line want.
func has(s, want string) bool {
	for _, l := range lines(s) {
		if l == want {
			return true
		}
	}
	return false
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
