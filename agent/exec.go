package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/toworker/toworker/internal/jobctx"
)

// ExecIn is the input of the built-in Exec function.
type ExecIn struct {
	// Command is run by /bin/sh -c, as ssh runs a command line. It is used
	// when Argv is empty.
	Command string `cbor:"1,keyasint,omitempty"`
	// Argv, when set, is run directly, with no shell.
	Argv []string `cbor:"2,keyasint,omitempty"`
	// Env is added to the job's environment ("KEY=value").
	Env []string `cbor:"3,keyasint,omitempty"`
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
		cmd = exec.CommandContext(ctx, in.Argv[0], in.Argv[1:]...)
	case in.Command != "":
		cmd = exec.CommandContext(ctx, "/bin/sh", "-c", in.Command)
	default:
		return ExecOut{}, errors.New("exec: no command given")
	}
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr
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
	if len(in.Env) > 0 {
		cmd.Env = append(os.Environ(), in.Env...)
	}
	err := cmd.Run()
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
