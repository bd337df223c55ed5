package remote_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/toworker/toworker/agent"
	"github.com/toworker/toworker/remote"
)

var Getwd = agent.Register("test.getwd", func(ctx context.Context, _ struct{}) (string, error) { return os.Getwd() })

// A job without Chdir runs in /, in a worker as in the boss (Inline), not
// in the login directory sshd started the agent in.
func TestJobsRunInRoot(t *testing.T) {
	p, _, _ := newPool(t, remote.PoolConfig{Hosts: []string{"h2"}})
	dir, err := remote.CallOn(context.Background(), p, "h2", Getwd, struct{}{})
	if err != nil || dir != "/" {
		t.Errorf("a worker's function runs in %q (%v), want /", dir, err)
	}
	if _, out, _, _ := execLines(t, p, agent.ExecIn{Argv: []string{"/bin/pwd"}}, ""); len(out) != 1 || out[0] != "/" {
		t.Errorf("an Inline function's command runs in %q, want /", out)
	}
	if _, out, _, _ := execLines(t, p, agent.ExecIn{Argv: []string{"/bin/pwd"}, InHome: true}, ""); len(out) != 1 || out[0] == "/" {
		t.Errorf("InHome: the command runs in %q, want $HOME", out)
	}
}

// execLines runs in with agent.Exec on h2 and returns the exit code, the
// stdout and stderr lines, and the boss's pid (the Exec job's WorkerPID).
func execLines(t *testing.T, p *remote.Pool, in agent.ExecIn, chdir string) (code int, stdout, stderr []string, boss int) {
	t.Helper()
	var mu sync.Mutex
	job := remote.Job{Host: "h2", Func: agent.Exec.Name(), Data: in, Chdir: chdir,
		OnOutput: func(l string) { mu.Lock(); stdout = append(stdout, l); mu.Unlock() },
		OnError:  func(l string) { mu.Lock(); stderr = append(stderr, l); mu.Unlock() },
	}
	res, err := p.Submit(context.Background(), job).Wait()
	if err != nil {
		t.Fatalf("%q: %v", in.Command, err)
	}
	var out agent.ExecOut
	if err := res.Decode(&out); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	return out.ExitCode, stdout, stderr, res.WorkerPID
}

// statParent is the parent pid in the one line of /proc/self/stat a
// command printed.
func statParent(t *testing.T, stat []string) int {
	t.Helper()
	if len(stat) != 1 || ppidOfStat(stat[0]) == 0 {
		t.Fatalf("want one line of /proc/self/stat, got %q", stat)
	}
	return ppidOfStat(stat[0])
}

// A command line of plain words is run without a shell in between, as sh
// itself would run it; everything else, and what only sh can run, still
// goes through /bin/sh with the same results as before.
func TestExecPlainCommandLines(t *testing.T) {
	p, _, _ := newPool(t, remote.PoolConfig{Hosts: []string{"h2"}})
	dir := t.TempDir()

	_, out, _, boss := execLines(t, p, agent.ExecIn{Command: "cat /proc/self/stat"}, "")
	if got := statParent(t, out); got != boss {
		t.Errorf("a plain command's parent is pid %d, want the agent's boss %d (no shell in between)", got, boss)
	}
	_, out, _, boss = execLines(t, p, agent.ExecIn{Command: "cat /proc/self/stat; :"}, "")
	if got := statParent(t, out); got == boss {
		t.Errorf("a list's command was started by the boss (%d), not by sh", got)
	}

	// A script without #!: the kernel refuses it, sh runs it.
	script := filepath.Join(dir, "noshebang")
	if err := os.WriteFile(script, []byte("echo script ran with \"$1\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	// A PATH set for the job is where the program is looked up.
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "uptime"), []byte("#!/bin/sh\necho the job PATH uptime\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		in         agent.ExecIn
		chdir      string
		code       int
		out, inErr string
	}{
		{in: agent.ExecIn{Command: script + " x"}, out: "script ran with x"},
		{in: agent.ExecIn{Command: "uptime", Env: []string{"PATH=" + bin + ":/usr/bin:/bin"}}, out: "the job PATH uptime"},
		{in: agent.ExecIn{Command: "no-such-command-tw arg"}, code: 127, inErr: "not found"},
		{in: agent.ExecIn{Command: "printf %s-%s a b"}, out: "a-b"}, // sh's builtin
		{in: agent.ExecIn{Command: "true --help"}},                  // exit-only builtins
		{in: agent.ExecIn{Command: "false"}, code: 1},               //
		{in: agent.ExecIn{Command: "true; false"}, code: 1},         // a list: sh
		{in: agent.ExecIn{Command: "/bin/false"}, code: 1},          // a program
		{in: agent.ExecIn{Command: "ls\t/no-such-dir-tw"}, code: 2, inErr: "no-such-dir-tw"},
		{in: agent.ExecIn{Command: "env", Env: []string{"TW_X=1"}}, chdir: dir, out: "PWD=" + dir},
		{in: agent.ExecIn{Command: "env"}, chdir: dir, out: "PWD=" + dir},
		{in: agent.ExecIn{Command: "env", Env: []string{"TW_X=1"}}, out: "TW_X=1"},
	}
	for _, tt := range tests {
		code, out, errs, _ := execLines(t, p, tt.in, tt.chdir)
		if code != tt.code {
			t.Errorf("%q: exit code %d, want %d (stderr %q)", tt.in.Command, code, tt.code, errs)
		}
		if tt.out != "" && !contains(out, tt.out) {
			t.Errorf("%q: stdout %q, want a line %q", tt.in.Command, out, tt.out)
		}
		if tt.inErr != "" && !strings.Contains(strings.Join(errs, "\n"), tt.inErr) {
			t.Errorf("%q: stderr %q, want %q in it", tt.in.Command, errs, tt.inErr)
		}
	}
}

func contains(lines []string, want string) bool {
	for _, l := range lines {
		if l == want {
			return true
		}
	}
	return false
}
