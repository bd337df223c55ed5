package remote

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/toworker/toworker/agent"
	"github.com/toworker/toworker/internal/wire"
)

// Job is one call of a registered function on a host, with what to do with
// its output, callbacks and outcome (RPC::ToWorker's DoRemoteJob).
type Job struct {
	// Host is the host to run on, as ssh knows it (an alias from
	// ~/.ssh/config, a name or an address). In a Pool, empty means any
	// host of the pool.
	Host string
	// Chdir is the directory the function runs in; empty means the
	// agent's directory ("/"). "~" and "~/..." are the home directory of
	// the user the agent runs as; a relative path is relative to "/".
	Chdir string
	// Func is the registered function's name (agent.Func.Name()).
	Func string
	// Desc describes the job in errors and logs.
	Desc string
	// Prefix is put before each output line when OnOutput/OnError are
	// nil; empty means "host: ".
	Prefix string
	// Data is the function's input, encoded as CBOR when the job is
	// submitted. A cbor.RawMessage is sent as is.
	Data any

	// WhenDone is called with the result when the function has returned,
	// whether with a value or its own error (Result.Err).
	WhenDone func(Result)
	// AllDone is called once, last, whatever the outcome.
	AllDone func()
	// OnFailure is called with a *FailureError for each attempt that fails
	// in transport (connect, auth, lost connection, agent crash), before
	// any retry.
	OnFailure func(error)
	// OnOutput and OnError receive the job's stdout and stderr lines,
	// without newline. When nil, lines go to the pool's Stdout and Stderr
	// (by default the master's), each prefixed.
	OnOutput, OnError func(line string)
	// Callbacks are the handlers the function can call with
	// callback.Call, by name.
	Callbacks map[string]Callback
	// LocalData is passed to every callback in CallbackRequest.LocalData;
	// it never leaves the master.
	LocalData any
	// NoRetry, when true, forbids retrying the job after a transport
	// failure. The zero value lets the job be retried (at-least-once
	// delivery: a retried job may have run, in part or whole, on the host
	// that failed).
	NoRetry bool
	// Timeout overrides the pool's timeout for this job. Zero means the
	// pool's; negative means none.
	Timeout time.Duration
}

// Callback handles a callback.Call from a running job. Its return value is
// encoded as CBOR and decoded into the caller's out; a non-nil error is
// returned to the caller as a *callback.Error. Each call runs in a goroutine
// of its own; ctx is the job's context, also cancelled when the job's
// attempt ends (result, timeout, failure) or the pool is killed. A handler
// must return once ctx is done: Pool.Close and Pool.Kill wait for handlers.
type Callback func(ctx context.Context, req CallbackRequest) (any, error)

// CallbackRequest is one call from a running job to the master.
type CallbackRequest struct {
	// Name is the callback's name.
	Name string
	// Host is the host the job runs on; Desc is the job's Desc.
	Host, Desc string
	// LocalData is the job's LocalData.
	LocalData any

	data cbor.RawMessage
}

// Decode decodes the callback's input into v.
func (r CallbackRequest) Decode(v any) error {
	if err := wire.Unmarshal(r.data, v); err != nil {
		return fmt.Errorf("remote: callback %s from %s: decode input into %T: %w", r.Name, r.Host, v, err)
	}
	return nil
}

// Raw returns the callback's input as CBOR.
func (r CallbackRequest) Raw() cbor.RawMessage { return r.data }

// Result is the outcome of a function that ran.
type Result struct {
	// Host is where the job ran (the last attempt's host).
	Host string
	// Desc and Func are the job's.
	Desc, Func string
	// Err is the function's own error as a *RemoteError, or nil.
	Err error
	// Attempts counts the attempts made, 1 when the first succeeded.
	Attempts int
	// Duration is the last attempt's time from sending the call to the
	// result.
	Duration time.Duration
	// WorkerPID is the process that ran the job on the host.
	WorkerPID int
	// WorkerJobs counts the jobs that worker had run, this one included.
	WorkerJobs int

	data cbor.RawMessage
}

// Decode decodes the function's output into v. It returns Err when the
// function failed.
func (r Result) Decode(v any) error {
	if r.Err != nil {
		return r.Err
	}
	if len(r.data) == 0 {
		return fmt.Errorf("remote: %s on %s: no result data", r.Func, r.Host)
	}
	if err := wire.DecodeData(r.data, v); err != nil {
		return fmt.Errorf("remote: %s on %s: decode result into %T: %w", r.Func, r.Host, v, err)
	}
	return nil
}

// Raw returns the function's output as CBOR.
func (r Result) Raw() cbor.RawMessage { return r.data }

// Run is a submitted job: its outcome arrives later.
type Run struct {
	job  Job
	ctx  context.Context
	pool *Pool
	// The encoded input, in the two pieces of wire.EncodeData: a large
	// []byte input is sent from the caller's slice, not copied.
	data, dataTail []byte

	done chan struct{} // closed when res and err are set
	res  Result
	err  error

	// guarded by pool.mu:
	attempts int
	excluded map[string]bool // hosts whose attempt failed in transport
	queuedAt time.Time
	admitted bool       // holds a slot of the pool's bounded queue
	sync     bool       // set only during submit's own dispatch
	syncHost *hostState // where that dispatch placed the run

	stopDequeue func() bool // unregisters the context's dequeue; static after submit
	taken       bool
	inDone      bool // in the pool's completion list
}

// Wait blocks until the job's outcome is known and returns it. The error is
// the function's own error (*RemoteError, also in Result.Err), a transport
// failure after the last attempt (*FailureError), ErrTimeout, the context's
// error, or ErrClosed.
func (r *Run) Wait() (Result, error) {
	<-r.done
	if r.pool != nil {
		r.pool.take(r)
	}
	return r.res, r.err
}

// Done returns a channel closed when the outcome is known.
func (r *Run) Done() <-chan struct{} { return r.done }

// Job returns the job as submitted.
func (r *Run) Job() Job { return r.job }

// defaultPool serves DoRemoteJob and Call: hosts join it as jobs name them,
// and their connections stay warm for later calls, until they have had no
// job for defaultIdleTimeout.
var defaultPool struct {
	mu sync.Mutex
	p  *Pool
}

func getDefaultPool() *Pool {
	defaultPool.mu.Lock()
	defer defaultPool.mu.Unlock()
	if defaultPool.p == nil {
		p, _ := newPool(context.Background(), PoolConfig{MaxPerHost: 16, IdleTimeout: defaultIdleTimeout}, true)
		defaultPool.p = p
	}
	return defaultPool.p
}

// defaultIdleTimeout is the IdleTimeout of the pool of DoRemoteJob and
// Call: a long-running program that calls many hosts now and then does
// not keep an agent running on each of them for the rest of its life.
const defaultIdleTimeout = 10 * time.Minute

// CloseDefault closes the connections DoRemoteJob and Call keep warm,
// stopping their agents. Later calls open new ones.
func CloseDefault() error {
	defaultPool.mu.Lock()
	p := defaultPool.p
	defaultPool.p = nil
	defaultPool.mu.Unlock()
	if p == nil {
		return nil
	}
	return p.Close()
}

// DoRemoteJob starts job on job.Host and returns at once; Wait on the Run
// for the outcome. The connection to the host is opened on first use and kept
// for later jobs, until it has had none for 10 minutes (see CloseDefault).
// It reads ~/.ssh/config and known_hosts like ssh; use a Pool for other
// settings.
func DoRemoteJob(ctx context.Context, job Job) *Run {
	return getDefaultPool().Submit(ctx, job)
}

// Call runs fn on host with in and returns its output: the typed,
// synchronous form of DoRemoteJob. The function's output lines go to the
// master's stdout and stderr, prefixed "host: ".
func Call[In, Out any](ctx context.Context, host string, fn agent.Func[In, Out], in In) (Out, error) {
	var out Out
	res, err := getDefaultPool().submit(ctx, Job{Host: host, Func: fn.Name(), Data: in}, true).Wait()
	if err != nil {
		return out, err
	}
	return out, res.Decode(&out)
}

// CallOn is Call through a pool: on host, or on any host of the pool when
// host is empty.
//
// A []byte input or output of 4 KiB or more is not copied on its way: the
// input is sent from in itself, so it must not change until CallOn (or
// Call) returns, and the output is a slice of the received message.
// Submit, which returns at once, copies its input.
func CallOn[In, Out any](ctx context.Context, p *Pool, host string, fn agent.Func[In, Out], in In) (Out, error) {
	var out Out
	res, err := p.submit(ctx, Job{Host: host, Func: fn.Name(), Data: in}, true).Wait()
	if err != nil {
		return out, err
	}
	return out, res.Decode(&out)
}

// remoteError converts the agent's error report.
func remoteError(host string, job *Job, e *wire.Error) *RemoteError {
	re := &RemoteError{Host: host, Desc: job.Desc, Func: job.Func, Kind: e.Kind, Message: e.Message,
		Stack: e.Stack, ExitCode: e.ExitCode, Signal: e.Signal}
	if re.Kind == wire.ErrKindCanceled {
		re.cause = context.Canceled
	}
	return re
}

var errNoFunc = errors.New("remote: Job.Func is empty")
