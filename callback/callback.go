// Package callback is what a registered function uses, on the remote host, to
// reach the master that started its job: call one of the job's callbacks, and
// log through the master's logger.
//
//	var ack Ack
//	if err := callback.Call(ctx, "progress", Progress{Done: n}, &ack); err != nil { … }
package callback

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/toworker/toworker/internal/jobctx"
)

// ErrNoJob is returned when the context does not belong to a job run by a
// toworker agent (for example in a local unit test of the function).
var ErrNoJob = errors.New("callback: context is not a toworker job's")

// Error is an error returned by the master's callback handler, or the
// master's refusal to run it (no handler of that name, input that does not
// decode). The job goes on; what to do is the function's choice.
type Error struct {
	Name    string // the callback's name
	Kind    string // "error" for the handler's own error; "unknown-callback", "decode", "panic" otherwise
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("callback %s: %s", e.Name, e.Message)
}

// Call calls the master's callback handler name with in, and decodes its
// reply into out (out may be nil to discard the reply). It blocks until the
// reply arrives or ctx ends. Errors from the handler are *Error.
func Call(ctx context.Context, name string, in any, out any) error {
	j, ok := jobctx.From(ctx)
	if !ok {
		return ErrNoJob
	}
	return j.Callback(ctx, name, in, out)
}

// Logger returns a logger whose records are sent to the master's
// *slog.Logger, in order, with the host and job as attributes. Outside a job
// it returns slog.Default().
func Logger(ctx context.Context) *slog.Logger {
	if j, ok := jobctx.From(ctx); ok {
		return j.Logger()
	}
	return slog.Default()
}

// Host returns the name the master uses for the host the job runs on, or ""
// outside a job.
func Host(ctx context.Context) string {
	if j, ok := jobctx.From(ctx); ok {
		return j.Host()
	}
	return ""
}
