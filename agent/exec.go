package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/toworker/toworker/internal/jobctx"
)

// ExecIn is the input of the built-in Exec function.
type ExecIn struct {
	// Command is run by /bin/sh -c, as ssh runs a command line. It is used
	// when Argv is empty. A line of plain words naming a program on PATH
	// ("uptime", "systemctl is-active nginx") means the same to every
	// shell, and is run directly, without the shell's process in between,
	// as sh itself would run it (see plainArgv); and true, false and :
	// need no process at all, in sh as in the agent.
	Command string `cbor:"1,keyasint,omitempty"`
	// Argv, when set, is run directly, with no shell.
	Argv []string `cbor:"2,keyasint,omitempty"`
	// Env is added to the job's environment ("KEY=value").
	Env []string `cbor:"3,keyasint,omitempty"`
	// InHome runs the command in the home directory ($HOME, as Env may
	// set it), as ssh runs commands in the login directory, instead of the
	// job's directory (Job.Chdir, or /). The job's directory is kept when
	// $HOME is unset or is not a directory, as `cd; COMMAND` would.
	InHome bool `cbor:"4,keyasint,omitempty"`
	// Stdin is the command's standard input; without it the command reads
	// an empty input (/dev/null), as under pdsh. The command need not read
	// it all: what it leaves is dropped when it exits.
	Stdin []byte `cbor:"5,keyasint,omitempty"`
}

// ExecOut is the output of the built-in Exec function.
type ExecOut struct {
	ExitCode int    `cbor:"1,keyasint"`
	Signal   string `cbor:"2,keyasint,omitempty"` // set when the command was killed by a signal
}

// Exec is the built-in function that runs a command on the host, its
// standard output and error captured as the job's. A non-zero exit status is
// a result (ExecOut.ExitCode), not an error; failing to start the command is
// an error.
//
// Exec runs in the agent's boss (it starts a process anyway, so a worker
// process in between would only cost time): the command gets the job's
// directory, its stdout and stderr (and those of every process it starts)
// become the job's output, and it runs in a process group of its own that
// is killed when the job times out or is cancelled.
var Exec = Register("toworker.exec", runExec, Inline(), func(e *entry) { e.ownDir = true })

func runExec(ctx context.Context, in ExecIn) (ExecOut, error) {
	var cmd *exec.Cmd
	switch {
	case len(in.Argv) > 0:
		cmd = execCommand(ctx, in.Argv, in, false)
	case in.Command != "":
		if code, ok := exitOnlyBuiltin(in.Command); ok {
			return ExecOut{ExitCode: code}, nil
		}
		if argv, ok := plainArgv(in.Command); ok && !setsPath(in.Env) {
			direct := execCommand(ctx, argv, in, true)
			if direct.Start() == nil {
				return waitExec(direct)
			}
			// Not found, or not a program the kernel runs (a script
			// without #!): sh runs it as a script, or says why not.
		}
		cmd = execCommand(ctx, []string{"/bin/sh", "-c", in.Command}, in, false)
	default:
		return ExecOut{}, errors.New("exec: no command given")
	}
	if err := cmd.Start(); err != nil {
		return ExecOut{}, fmt.Errorf("exec: %w", err)
	}
	return waitExec(cmd)
}

// execCommand returns the command argv for the job of ctx, in the directory
// and with the environment that in asks for. For a command line run without
// the shell (direct), PWD is set as sh sets it.
func execCommand(ctx context.Context, argv []string, in ExecIn, direct bool) *exec.Cmd {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr
	if len(in.Stdin) > 0 {
		cmd.Stdin = bytes.NewReader(in.Stdin)
	}
	if j, ok := jobctx.From(ctx); ok {
		if jio, ok := j.(inlineIO); ok {
			cmd.Dir = jio.inlineDir()
			cmd.Stdout, cmd.Stderr = jio.inlineOutput(0), jio.inlineOutput(1)
			// The command's whole process group goes when the job does;
			// output still held by processes it left behind is given up
			// a second after it exits.
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
			cmd.WaitDelay = time.Second
		}
	}
	if in.InHome {
		if home := homeDir(in.Env); home != "" {
			if fi, err := os.Stat(home); err == nil && fi.IsDir() {
				cmd.Dir = home
			}
		}
	}
	if len(in.Env) > 0 {
		cmd.Env = append(os.Environ(), in.Env...)
		if direct && cmd.Dir != "" {
			// os/exec sets PWD for Dir only when Env is nil.
			if dir, err := filepath.Abs(cmd.Dir); err == nil {
				cmd.Env = append(cmd.Env, "PWD="+dir)
			}
		}
	}
	return cmd
}

// waitExec waits for a started command and turns its exit into ExecOut.
func waitExec(cmd *exec.Cmd) (ExecOut, error) {
	err := cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		out := ExecOut{ExitCode: ee.ExitCode()}
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			out.Signal = ws.Signal().String()
			out.ExitCode = 128 + int(ws.Signal())
		}
		return out, nil
	}
	if err != nil {
		return ExecOut{}, fmt.Errorf("exec: %w", err)
	}
	return ExecOut{}, nil
}

// plainArgv returns the words of line when every POSIX shell would run it
// as one program with exactly those words as its arguments: words made only
// of characters that no shell gives a meaning (letters, digits and
// - _ . / , : @ % + =) separated by spaces or tabs, the first word not an
// assignment and not a keyword or builtin of any common sh (a builtin such
// as echo, test or pwd may differ from the program of the same name). For
// such a line, sh itself execs the program it finds on PATH; running it
// directly saves the shell's process. ok is false for every other line,
// which /bin/sh runs.
func plainArgv(line string) (argv []string, ok bool) {
	argv = plainWords(line)
	if len(argv) == 0 || strings.Contains(argv[0], "=") || shellWord(argv[0]) {
		return nil, false
	}
	return argv, true
}

// plainWords returns the words of line when it has only plain words
// (plainByte) separated by spaces or tabs, else nil.
func plainWords(line string) []string {
	for i := 0; i < len(line); i++ {
		if c := line[i]; !plainByte(c) && c != ' ' && c != '\t' {
			return nil
		}
	}
	return strings.FieldsFunc(line, func(r rune) bool { return r == ' ' || r == '\t' })
}

// exitOnlyBuiltin returns the exit status of line when it is a builtin that
// does nothing but exit, whatever its arguments: true, : or false. sh runs
// them without a process, and so does the agent (`toworker run -- true`
// checks that hosts answer).
func exitOnlyBuiltin(line string) (code int, ok bool) {
	w := plainWords(line)
	if len(w) == 0 {
		return 0, false
	}
	switch w[0] {
	case "true", ":":
		return 0, true
	case "false":
		return 1, true
	}
	return 0, false
}

// plainByte reports whether c means itself to every shell, anywhere in a
// word.
func plainByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("-_./,:@%+=", c) >= 0
}

// shellWord reports whether w is a keyword or builtin of dash, bash, ksh,
// zsh's sh mode, busybox ash or the BSDs' sh: a command line that starts
// with one is left to the shell.
func shellWord(w string) bool {
	switch w {
	case "!", "[", "[[", "]]", "{", "}", ".", ":", "alias", "autoload", "bg",
		"bind", "break", "builtin", "caller", "case", "cd", "chdir", "command",
		"compgen", "complete", "compopt", "continue", "coproc", "declare",
		"dirs", "disown", "do", "done", "echo", "elif", "else", "enable",
		"esac", "eval", "exec", "exit", "export", "false", "fc", "fg", "fi",
		"for", "function", "functions", "getopts", "hash", "help", "history",
		"if", "in", "integer", "jobid", "jobs", "kill", "let", "local",
		"logout", "mapfile", "nameref", "popd", "print", "printf", "pushd",
		"pwd", "read", "readarray", "readonly", "return", "select", "set",
		"setvar", "shift", "shopt", "source", "suspend", "test", "then",
		"time", "times", "trap", "true", "type", "typeset", "ulimit", "umask",
		"unalias", "unset", "until", "wait", "whence", "while":
		return true
	}
	return false
}

// homeDir is $HOME as a command run with env added to the agent's
// environment sees it.
func homeDir(env []string) string {
	home := os.Getenv("HOME")
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "HOME="); ok {
			home = v
		}
	}
	return home
}

// setsPath reports whether env sets PATH, which the program would then be
// looked up in: the shell does that lookup.
func setsPath(env []string) bool {
	for _, kv := range env {
		if strings.HasPrefix(kv, "PATH=") {
			return true
		}
	}
	return false
}
