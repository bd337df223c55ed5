package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
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
var Exec = Register("toworker.exec", runExec)

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
