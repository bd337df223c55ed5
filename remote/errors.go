package remote

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// Errors callers match with errors.Is.
var (
	// ErrClosed is returned for jobs submitted to, or still queued in, a
	// pool that has been closed or killed.
	ErrClosed = errors.New("remote: pool closed")
	// ErrNoPending is returned by Next when no submitted run is left to
	// take.
	ErrNoPending = errors.New("remote: no pending runs")
	// ErrTimeout is a job that ran past its timeout. Errors wrapping it
	// also match context.DeadlineExceeded.
	ErrTimeout = timeoutError{}
	// ErrHostDown is a job pinned to a host that could not be reached
	// within the job's timeout.
	ErrHostDown = errors.New("remote: host unreachable")
)

type timeoutError struct{}

func (timeoutError) Error() string        { return "remote: job timed out" }
func (timeoutError) Is(target error) bool { return target == context.DeadlineExceeded }

// Error kinds in RemoteError.Kind.
const (
	KindFunc        = "error"            // the function returned an error
	KindPanic       = "panic"            // the function panicked
	KindExit        = "exit"             // the worker process exited during the job (os.Exit)
	KindSignal      = "signal"           // the worker process was killed by a signal (crash, OOM killer)
	KindUnknownFunc = "unknown-function" // no function of that name is registered in the agent
	KindDecode      = "decode"           // the job's data does not decode into the function's input type
	KindChdir       = "chdir"            // the job's Chdir could not be entered
	KindInit        = "init"             // the worker's Init function failed
	KindTimeout     = "timeout"          // the job ran past its timeout and was killed
	KindCanceled    = "canceled"         // the job's context was cancelled and the job killed
	KindAgent       = "agent"            // the agent could not run the job
)

// RemoteError is a job's own failure, reported by the agent: the function
// returned an error or panicked, its worker died, or the agent could not
// run it as asked. It is a result, not a transport failure: it is never
// retried and OnFailure is not called for it.
type RemoteError struct {
	Host     string
	Desc     string // the job's Desc
	Func     string
	Kind     string // one of the Kind constants
	Message  string
	Stack    string // the remote goroutine's stack, for panics and crashes
	ExitCode int    // for KindExit
	Signal   string // for KindSignal

	cause error // context.Canceled / ErrTimeout for cancelled jobs
}

func (e *RemoteError) Error() string {
	var b strings.Builder
	b.WriteString("remote: ")
	b.WriteString(e.Host)
	if e.Desc != "" {
		fmt.Fprintf(&b, " (%s)", e.Desc)
	}
	fmt.Fprintf(&b, ": %s: %s: %s", e.Func, e.Kind, e.Message)
	return b.String()
}

// Unwrap returns ErrTimeout for a job that timed out and context.Canceled
// for a cancelled one.
func (e *RemoteError) Unwrap() error { return e.cause }

// FailureError is a transport failure: the host could not be reached or
// authenticated, the connection was lost, or the agent could not be put in
// place. OnFailure is called with it, and a retryable job is tried again.
type FailureError struct {
	Host string
	Desc string // the job's Desc, when the failure hit a job
	Op   string // what was being done: "connect", "bootstrap", "run"
	Err  error
}

func (e *FailureError) Error() string {
	var b strings.Builder
	b.WriteString("remote: ")
	b.WriteString(e.Host)
	if e.Desc != "" {
		fmt.Fprintf(&b, " (%s)", e.Desc)
	}
	fmt.Fprintf(&b, ": %s: %v", e.Op, e.Err)
	return b.String()
}

func (e *FailureError) Unwrap() error { return e.Err }

// IsFailure reports whether err is (or wraps) a transport failure.
func IsFailure(err error) bool {
	var fe *FailureError
	return errors.As(err, &fe)
}
