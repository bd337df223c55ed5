// Package agent is the remote side of toworker: the table of registered
// functions, and the boss and worker processes that run them on a host.
//
// A program that uses toworker registers its functions at package level and
// calls ServeIfAgent first thing in main. The same binary then serves both
// roles: run normally, it is the master; started by toworker on a remote host
// (with the argument "--toworker-agent"), ServeIfAgent turns it into the
// agent and never returns.
//
//	var Count = agent.Register("count", func(ctx context.Context, in CountIn) (CountOut, error) { … })
//
//	func main() {
//		agent.ServeIfAgent()
//		…
//	}
package agent

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"sync"

	"github.com/toworker/toworker/internal/wire"
)

// Func is a typed handle to a registered function. Share it between master
// and agent code: the master uses its name (and its types, through
// remote.Call); the agent runs it.
type Func[In, Out any] struct {
	name string
}

// Name returns the name the function was registered under.
func (f Func[In, Out]) Name() string { return f.name }

// entry is one registered function with its types erased.
type entry struct {
	name   string
	inline bool // runs in the boss, not in a worker process (Inline)
	// ownDir: an inline function that takes the job's Chdir itself (it
	// cannot be done for the whole boss); see inlineDir.
	ownDir bool
	inType reflect.Type
	// call decodes data into the input type, runs the function, and encodes
	// its output in the two pieces of wire.EncodeData.
	call func(ctx context.Context, data []byte) (head, tail []byte, err error)
}

// registry is the process-wide function table. Registration happens from
// package initialisation; serving freezes the table so that no function is
// added while jobs look it up.
var registry struct {
	mu     sync.Mutex
	funcs  map[string]*entry
	frozen bool
}

// Register adds fn to the table of functions the agent can run, under name,
// and returns a typed handle to it. It is meant to be called at package level
// (var F = agent.Register(...)). It panics if name is empty or already taken,
// or if called after the agent has started serving: each is a programming
// error in the binary itself, found the first time it runs.
func Register[In, Out any](name string, fn func(context.Context, In) (Out, error), opts ...Option) Func[In, Out] {
	if name == "" {
		panic("agent: Register with an empty name")
	}
	if fn == nil {
		panic("agent: Register " + name + " with a nil function")
	}
	e := &entry{
		name:   name,
		inType: reflect.TypeFor[In](),
		call: func(ctx context.Context, data []byte) (head, tail []byte, err error) {
			var in In
			if len(data) > 0 {
				if err := wire.DecodeData(data, &in); err != nil {
					return nil, nil, &decodeError{fn: name, typ: reflect.TypeFor[In](), err: err}
				}
			}
			out, err := fn(ctx, in)
			if err != nil {
				return nil, nil, err
			}
			if head, tail, err = wire.EncodeData(out); err != nil {
				return nil, nil, fmt.Errorf("encode result of %s: %w", name, err)
			}
			return head, tail, nil
		},
	}
	for _, o := range opts {
		o(e)
	}
	registry.mu.Lock()
	defer registry.mu.Unlock()
	if registry.frozen {
		panic("agent: Register " + name + " after the agent started serving")
	}
	if registry.funcs == nil {
		registry.funcs = make(map[string]*entry)
	}
	if _, dup := registry.funcs[name]; dup {
		panic("agent: function " + name + " registered twice")
	}
	registry.funcs[name] = e
	return Func[In, Out]{name: name}
}

// Option changes how a registered function runs.
type Option func(*entry)

// Inline runs the function in the agent's boss process, in a goroutine of
// its own, instead of in a worker process: a call then costs no hop to a
// worker and back, which matters for small, frequent calls (lookups,
// counters, health checks). The price is the worker's isolation, so use it
// only for functions that
//   - print nothing: their stdout and stderr are not captured per job (they
//     go to the agent's diagnostics);
//   - do not change the process: no Chdir (a job with Chdir fails), no
//     os.Exit, no global state shared unsafely between concurrent calls;
//   - cannot crash: a panic in the function's own goroutine is recovered
//     and reported like any other, but a crash elsewhere takes the whole
//     agent, and every job on the host, down;
//   - honour ctx: a timeout or cancellation cancels ctx, but nothing can be
//     killed;
//   - are short: the boss runs on one processor (GOMAXPROCS 1), which its
//     inline calls share with the routing of every job on the host.
//
// Inline calls count as the host's jobs: with remote.PoolConfig.Pipeline,
// at most MaxPerHost jobs run at once, inline or in workers, and the rest
// wait in the agent.
//
// Callbacks and callback.Logger work as in a worker.
func Inline() Option { return func(e *entry) { e.inline = true } }

// lookup finds a registered function.
func lookup(name string) (*entry, bool) {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	e, ok := registry.funcs[name]
	return e, ok
}

// freeze stops further registration.
func freeze() {
	registry.mu.Lock()
	registry.frozen = true
	registry.mu.Unlock()
}

// Names returns the registered function names, sorted.
func Names() []string {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	names := make([]string, 0, len(registry.funcs))
	for n := range registry.funcs {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// decodeError is input data that does not fit the function's input type.
type decodeError struct {
	fn  string
	typ reflect.Type
	err error
}

func (e *decodeError) Error() string {
	return fmt.Sprintf("data for %s does not decode into %v: %v", e.fn, e.typ, e.err)
}

func (e *decodeError) Unwrap() error { return e.err }

// Cascade runs the registered function name locally, in the calling worker,
// with in as its input, and decodes its output into out (Clutch::Worker's
// cascade). It is for functions that build on one another; it does not go
// through the master.
func Cascade(ctx context.Context, name string, in, out any) error {
	e, ok := lookup(name)
	if !ok {
		return fmt.Errorf("agent: cascade: no function %q is registered", name)
	}
	data, err := wire.Marshal(in)
	if err != nil {
		return fmt.Errorf("agent: cascade %s: encode input: %w", name, err)
	}
	head, tail, err := e.call(ctx, data)
	if err != nil {
		return err
	}
	if out == nil {
		return nil
	}
	if err := wire.DecodeData(append(head, tail...), out); err != nil {
		return fmt.Errorf("agent: cascade %s: decode output: %w", name, err)
	}
	return nil
}

// errorKind classifies an error returned by a function call for the wire.
func errorKind(err error) string {
	var de *decodeError
	if errors.As(err, &de) {
		return wire.ErrKindDecode
	}
	return wire.ErrKindFunc
}
