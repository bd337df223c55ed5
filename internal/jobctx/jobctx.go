// Package jobctx carries the running job's link to its worker through a
// context.Context, so that package callback can reach the master without
// importing package agent.
package jobctx

import (
	"context"
	"log/slog"
)

// Job is what a running job can ask of the worker that runs it.
type Job interface {
	// Callback calls the master's handler name with in and decodes its reply
	// into out (which may be nil to discard it).
	Callback(ctx context.Context, name string, in, out any) error
	// Logger returns a logger whose records reach the master's logger.
	Logger() *slog.Logger
	// Host is the name the master knows this host by.
	Host() string
}

type key struct{}

// With returns a context carrying j.
func With(ctx context.Context, j Job) context.Context { return context.WithValue(ctx, key{}, j) }

// From returns the job in ctx, if any.
func From(ctx context.Context) (Job, bool) {
	j, ok := ctx.Value(key{}).(Job)
	return j, ok
}
