package cli

import (
	"fmt"
	"strings"

	"github.com/fxamacker/cbor/v2"

	"github.com/toworker/toworker/agent"
	"github.com/toworker/toworker/remote"
)

// runTask runs a shell command line through agent.Exec.
type runTask struct {
	command string
	env     []string
	chdir   string
	stdin   []byte // --stdin: every host's command reads it
}

func (t *runTask) job(host string) remote.Job {
	// The agent runs jobs in /; ssh runs commands in the login directory
	// (and stays in / when that fails).
	return remote.Job{
		Func:  agent.Exec.Name(),
		Desc:  "run",
		Chdir: t.chdir,
		Data:  agent.ExecIn{Command: t.command, Env: t.env, InHome: t.chdir == "", Stdin: t.stdin},
	}
}

func (t *runTask) done(o *outcome, res remote.Result, err error) {
	if o.status != statusOK {
		return
	}
	if err != nil {
		o.status, o.reason = statusFailed, remoteReason(err)
		return
	}
	var out agent.ExecOut
	if err := res.Decode(&out); err != nil {
		o.status, o.reason = statusFailed, oneLine(err.Error())
		return
	}
	code := out.ExitCode
	o.exitCode = &code
	switch {
	case out.Signal != "":
		o.status, o.reason = statusFailed, "killed by signal "+out.Signal
	case code != 0:
		o.status, o.reason = statusFailed, fmt.Sprintf("exit status %d", code)
	}
}

// callTask runs a registered function with data given as JSON.
type callTask struct {
	fn    string
	data  cbor.RawMessage // nil: no data (the function gets its input's zero value)
	chdir string
	sink  *sink
}

func (t *callTask) job(host string) remote.Job {
	j := remote.Job{Func: t.fn, Desc: "call " + t.fn, Chdir: t.chdir}
	if t.data != nil {
		j.Data = t.data
	}
	return j
}

func (t *callTask) done(o *outcome, res remote.Result, err error) {
	if o.status != statusOK {
		return
	}
	if err != nil {
		o.status, o.reason = statusFailed, remoteReason(err)
		return
	}
	js, err := cborToJSON(res.Raw())
	if err != nil {
		o.status, o.reason = statusFailed, oneLine(err.Error())
		return
	}
	o.result = js
	if t.sink.mode != modeJSON {
		t.sink.line(o.host, streamOut, string(js))
	}
}

// shellJoin joins command words with spaces, as ssh and pdsh do: the
// remote shell splits them again, so quoting is the user's.
func shellJoin(words []string) string { return strings.Join(words, " ") }
