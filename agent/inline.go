package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"

	"github.com/toworker/toworker/internal/jobctx"
	"github.com/toworker/toworker/internal/wire"
)

// inlineJob is a call of an Inline function, running in the boss.
type inlineJob struct {
	b      *boss
	id     uint32
	ctx    context.Context // the job's; cancelled by cancel
	cancel context.CancelFunc
	dir    string // the job's Chdir, for functions that take it themselves

	mu      sync.Mutex // guards pending, seq and log
	pending map[uint64]chan *wire.CallbackReply
	seq     uint64
	log     *slog.Logger
}

// inlineCall decodes f when it is a whole call of an Inline function.
// It reports false for any other frame, which goes to a worker as usual.
// The call may refer to f's payload.
func inlineCall(f wire.Frame) (*wire.Call, *entry, bool) {
	if f.More {
		return nil, nil, false // a large call: workers take it
	}
	v, err := wire.Decode(f.Kind, f.Payload)
	if err != nil {
		return nil, nil, false
	}
	call := v.(*wire.Call)
	e, ok := lookup(call.Func)
	if !ok || !e.inline {
		return nil, nil, false
	}
	return call, e, true
}

// startInlineLocked registers an Inline call as running; runInline then
// runs it. b.mu is held, so that a cancel finds the job in b.jobs (queued)
// or in b.inline (running), never in neither.
func (b *boss) startInlineLocked(id uint32) *inlineJob {
	ctx, cancel := context.WithCancel(context.Background())
	j := &inlineJob{b: b, id: id, ctx: ctx, cancel: cancel, pending: make(map[uint64]chan *wire.CallbackReply)}
	b.inline[id] = j
	b.inlineWG.Add(1)
	return j
}

// runInline runs call for j in a goroutine of the boss, and then starts
// the calls that waited for its slot (hello.MaxWorkers).
func (b *boss) runInline(j *inlineJob, call *wire.Call, e *entry) {
	go func() {
		defer b.inlineWG.Done()
		defer j.cancel()
		res := &wire.Result{WorkerPID: os.Getpid()}
		if call.Chdir != "" && e.ownDir {
			j.dir = expandHome(call.Chdir)
			if fi, err := os.Stat(j.dir); err != nil || !fi.IsDir() {
				if err == nil {
					err = fmt.Errorf("chdir %s: not a directory", j.dir)
				}
				res.Err = &wire.Error{Kind: wire.ErrKindChdir, Message: err.Error()}
			} else {
				res.Data, res.DataTail, res.Err = invoke(jobctx.With(j.ctx, j), e, call.Data)
			}
		} else if call.Chdir != "" {
			res.Err = &wire.Error{Kind: wire.ErrKindChdir, Message: fmt.Sprintf("%s is an Inline function: it runs in the agent itself and cannot change directory to %s", call.Func, call.Chdir)}
		} else {
			res.Data, res.DataTail, res.Err = invoke(jobctx.With(j.ctx, j), e, call.Data)
		}
		b.mu.Lock()
		delete(b.inline, j.id)
		ds := b.dispatchLocked()
		b.mu.Unlock()
		b.deliver(ds)
		b.out.WriteValue(wire.KindResult, j.id, res)
	}()
}

// inlineJob returns the running inline job id, if any.
func (b *boss) inlineJob(id uint32) *inlineJob {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.inline[id]
}

func (j *inlineJob) Host() string { return j.b.hello.Host }

func (j *inlineJob) Logger() *slog.Logger {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.log == nil {
		j.log = slog.New(&logHandler{w: j.b.out, job: j.id})
	}
	return j.log
}

func (j *inlineJob) Callback(ctx context.Context, name string, in, out any) error {
	data, err := wire.Marshal(in)
	if err != nil {
		return fmt.Errorf("callback %s: encode input: %w", name, err)
	}
	ch := make(chan *wire.CallbackReply, 1)
	j.mu.Lock()
	j.seq++
	seq := j.seq
	j.pending[seq] = ch
	j.mu.Unlock()
	forget := func() {
		j.mu.Lock()
		delete(j.pending, seq)
		j.mu.Unlock()
	}
	if err := j.b.out.WriteValue(wire.KindCallback, j.id, &wire.CallbackRequest{Seq: seq, Name: name, Data: data}); err != nil {
		forget()
		return fmt.Errorf("callback %s: %w", name, err)
	}
	select {
	case rep := <-ch:
		return callbackResult(name, rep, out)
	case <-ctx.Done():
		forget()
		return fmt.Errorf("callback %s: %w", name, ctx.Err())
	}
}

// deliver hands a callback reply frame to the waiting Callback.
func (j *inlineJob) deliver(f wire.Frame) error {
	v, err := wire.Decode(f.Kind, f.Payload)
	if err != nil {
		return err
	}
	rep := v.(*wire.CallbackReply)
	j.mu.Lock()
	ch := j.pending[rep.Seq]
	delete(j.pending, rep.Seq)
	j.mu.Unlock()
	if ch != nil {
		ch <- rep // buffered: never blocks
	}
	return nil
}

// inlineIO is what an inline function that starts processes (Exec) needs
// of its job: the directory to run in, and writers whose bytes become the
// job's stdout and stderr frames.
type inlineIO interface {
	inlineDir() string
	inlineOutput(stream int) io.Writer
}

func (j *inlineJob) inlineDir() string { return j.dir }

func (j *inlineJob) inlineOutput(stream int) io.Writer {
	return &frameWriter{out: j.b.out, job: j.id, kind: streamKinds[stream]}
}

// frameWriter turns writes into output frames of a job.
type frameWriter struct {
	out  *wire.Writer
	job  uint32
	kind wire.Kind
}

func (w *frameWriter) Write(p []byte) (int, error) {
	for off := 0; off < len(p); off += 32 << 10 {
		end := min(len(p), off+32<<10)
		if err := w.out.WriteFrame(wire.Frame{Kind: w.kind, Job: w.job, Payload: p[off:end]}); err != nil {
			return off, err
		}
	}
	return len(p), nil
}
