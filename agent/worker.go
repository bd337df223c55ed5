package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/toworker/toworker/callback"
	"github.com/toworker/toworker/internal/jobctx"
	"github.com/toworker/toworker/internal/rawio"
	"github.com/toworker/toworker/internal/wire"
)

// Worker descriptors, as the boss sets them up.
const (
	workerSocketFD = 3 // Unix socket to the boss
	workerCrashFD  = 4 // pipe to the boss for the Go runtime's crash output
)

// worker runs jobs one at a time, in this process, for the boss.
type worker struct {
	conn net.Conn
	w    *wire.Writer
	out  *capture
	host string
	jobs int
	pid  int   // this process's, for each result
	gate *gate // shared with the boss; nil without

	// The socket has no reader goroutine of its own: whoever holds readTok
	// reads it — the main loop between jobs, or a callback waiting for its
	// reply during one — and hands what it reads to whom it is for. A call
	// thus starts on the goroutine that read it, without waking another.
	r       *wire.Reader
	readTok chan struct{} // capacity 1: the right to read r
	dead    chan struct{} // closed when reading failed or the boss said bye

	mu      sync.Mutex // guards pending and queued
	pending map[uint64]chan *wire.CallbackReply
	queued  []workerCall // calls read by a callback's goroutine
	seq     atomic.Uint64
}

type workerCall struct {
	job  uint32
	call *wire.Call
}

// serveWorker is the worker process's main loop. It returns when the boss
// closes the socket or says bye.
func serveWorker() error {
	syscall.CloseOnExec(workerSocketFD)
	syscall.CloseOnExec(workerCrashFD)
	if crash := os.NewFile(workerCrashFD, "crash"); crash != nil {
		// Where the runtime writes a fatal error's trace; the boss reads it
		// and reports it as the job's stack. Errors mean the boss gave none.
		_ = debug.SetCrashOutput(crash, debug.CrashOptions{})
		crash.Close()
	}
	conn, err := net.FileConn(os.NewFile(workerSocketFD, "boss"))
	if err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	defer conn.Close()
	sock := rawio.New(conn.(*net.UnixConn))
	r := wire.NewReader(sock, wire.Limits{})
	wk := &worker{
		conn:    conn,
		w:       wire.NewWriter(sock),
		r:       r,
		readTok: make(chan struct{}, 1),
		dead:    make(chan struct{}),
		pending: make(map[uint64]chan *wire.CallbackReply),
	}
	wk.readTok <- struct{}{}
	wk.out = newCapture(wk.w)
	f, err := r.ReadMessage()
	if err != nil {
		return fmt.Errorf("worker: read hello: %w", err)
	}
	v, err := wire.Decode(f.Kind, f.Payload)
	hello, ok := v.(*wire.Hello)
	if err != nil || !ok {
		return fmt.Errorf("worker: first message is %s, not hello (%v)", f.Kind, err)
	}
	wk.host = hello.Host
	syscall.CloseOnExec(workerGateFD)
	if f := os.NewFile(workerGateFD, "gate"); f != nil {
		if g, err := mapGate(f); err == nil { // no fd 7: the boss has no gate
			wk.gate = g
		}
		f.Close()
	}
	wk.pid = os.Getpid()
	if err := wk.w.WriteValue(wire.KindHello, 0, &wire.Hello{Version: wire.Version, Role: "worker", PID: wk.pid}); err != nil {
		return err
	}
	var initErr *wire.Error
	if hello.Init != "" {
		initErr = wk.runInit(hello.Init)
	}
	for {
		c, ok := wk.nextCall()
		if !ok {
			return nil
		}
		wk.jobs++
		if wk.gate != nil {
			switch wk.gate.begin(c.job) {
			case gateSkip:
				res := &wire.Result{Err: &wire.Error{Kind: wire.ErrKindCanceled, Message: "job cancelled before it started"},
					WorkerPID: wk.pid, WorkerJobs: wk.jobs}
				if err := wk.w.WriteValue(wire.KindResult, c.job, res); err != nil {
					return err
				}
				continue
			case gateDying:
				awaitKill()
			}
		}
		res := wk.runJob(c, initErr)
		if wk.gate != nil && wk.gate.end(c.job) == gateDying {
			awaitKill()
		}
		res.WorkerPID = wk.pid
		res.WorkerJobs = wk.jobs
		if err := wk.w.WriteValue(wire.KindResult, c.job, res); err != nil {
			return err
		}
		if initErr != nil {
			return errors.New(initErr.Message)
		}
	}
}

// awaitKill waits for the boss's SIGKILL, which the start gate said is on
// its way: the worker must start nothing more.
func awaitKill() {
	for {
		time.Sleep(time.Hour)
	}
}

// nextCall reads the socket until the boss sends the next call. It
// returns false when the boss has gone or said bye.
func (wk *worker) nextCall() (workerCall, bool) {
	for {
		wk.mu.Lock()
		if len(wk.queued) > 0 {
			c := wk.queued[0]
			wk.queued = wk.queued[1:]
			wk.mu.Unlock()
			return c, true
		}
		wk.mu.Unlock()
		select {
		case <-wk.readTok:
		case <-wk.dead:
			return workerCall{}, false
		}
		c, isCall, ok := wk.readOne()
		wk.readTok <- struct{}{}
		if !ok {
			return workerCall{}, false
		}
		if isCall {
			return c, true
		}
	}
}

// readOne reads one message and delivers it. The caller holds readTok.
// ok is false when the stream has ended (wk.dead is then closed).
func (wk *worker) readOne() (c workerCall, isCall, ok bool) {
	f, err := wk.r.ReadMessage()
	if err != nil || f.Kind == wire.KindBye {
		wk.die()
		return c, false, false
	}
	switch f.Kind {
	case wire.KindCall:
		v, err := wire.Decode(f.Kind, f.Payload)
		if err != nil {
			wk.die()
			return c, false, false
		}
		return workerCall{job: f.Job, call: v.(*wire.Call)}, true, true
	case wire.KindCallbackReply:
		v, err := wire.Decode(f.Kind, f.Payload)
		if err != nil {
			wk.die()
			return c, false, false
		}
		rep := v.(*wire.CallbackReply)
		wk.mu.Lock()
		ch := wk.pending[rep.Seq]
		delete(wk.pending, rep.Seq)
		wk.mu.Unlock()
		if ch != nil {
			ch <- rep // buffered: never blocks
		}
	}
	return c, false, true
}

func (wk *worker) die() {
	wk.mu.Lock()
	defer wk.mu.Unlock()
	select {
	case <-wk.dead:
	default:
		close(wk.dead)
	}
}

// awaitReply waits for the reply to callback seq, reading the socket
// itself whenever no one else is.
func (wk *worker) awaitReply(ctx context.Context, ch chan *wire.CallbackReply) (*wire.CallbackReply, error) {
	for {
		select {
		case rep := <-ch:
			return rep, nil
		default:
		}
		select {
		case rep := <-ch:
			return rep, nil
		case <-wk.readTok:
			c, isCall, ok := wk.readOne()
			if isCall { // not expected during a job; keep it for the main loop
				wk.mu.Lock()
				wk.queued = append(wk.queued, c)
				wk.mu.Unlock()
			}
			wk.readTok <- struct{}{}
			if !ok {
				select {
				case rep := <-ch:
					return rep, nil
				default:
				}
				return nil, errors.New("the agent's boss went away")
			}
		case <-wk.dead:
			return nil, errors.New("the agent's boss went away")
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (wk *worker) runInit(name string) *wire.Error {
	e, ok := lookup(name)
	if !ok {
		return &wire.Error{Kind: wire.ErrKindInit, Message: fmt.Sprintf("init function %q is not registered", name)}
	}
	_, _, werr := invoke(context.Background(), e, nil)
	if werr != nil {
		werr.Message = "init " + name + ": " + werr.Message
		werr.Kind = wire.ErrKindInit
	}
	return werr
}

// runJob runs one call, its output attributed to it until it returns.
func (wk *worker) runJob(c workerCall, initErr *wire.Error) *wire.Result {
	wk.out.start(c.job)
	defer wk.out.finish()
	if initErr != nil {
		return &wire.Result{Err: initErr}
	}
	e, ok := lookup(c.call.Func)
	if !ok {
		return &wire.Result{Err: &wire.Error{Kind: wire.ErrKindUnknownFunc,
			Message: fmt.Sprintf("no function %q is registered in the agent (registered: %v)", c.call.Func, Names())}}
	}
	if dir := expandHome(c.call.Chdir); dir != "" {
		prev, _ := os.Getwd()
		if err := os.Chdir(dir); err != nil {
			return &wire.Result{Err: &wire.Error{Kind: wire.ErrKindChdir, Message: err.Error()}}
		}
		if prev != "" {
			defer os.Chdir(prev)
		}
	}
	link := &jobLink{wk: wk, job: c.job}
	ctx := jobctx.With(context.Background(), link)
	res := &wire.Result{}
	res.Data, res.DataTail, res.Err = invoke(ctx, e, c.call.Data)
	return res
}

// expandHome expands a leading "~" or "~/" in a job's directory to the home
// directory, as a login shell would. Without Chdir a job runs where sshd
// started the agent: the user's home directory.
func expandHome(dir string) string {
	if dir != "~" && !strings.HasPrefix(dir, "~/") {
		return dir
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return dir
	}
	return home + dir[1:]
}

// invoke runs a registered function, turning a panic into an error.
// The output is encoded in the two pieces of wire.EncodeData.
func invoke(ctx context.Context, e *entry, data []byte) (head, tail []byte, werr *wire.Error) {
	defer func() {
		if p := recover(); p != nil {
			head, tail = nil, nil
			werr = &wire.Error{Kind: wire.ErrKindPanic, Message: fmt.Sprintf("panic: %v", p), Stack: string(debug.Stack())}
		}
	}()
	head, tail, err := e.call(ctx, data)
	if err != nil {
		return nil, nil, &wire.Error{Kind: errorKind(err), Message: err.Error()}
	}
	return head, tail, nil
}

// jobLink is the running job's side of package callback.
type jobLink struct {
	wk  *worker
	job uint32
	log *slog.Logger
}

func (l *jobLink) Host() string { return l.wk.host }

func (l *jobLink) Logger() *slog.Logger {
	if l.log == nil {
		l.log = slog.New(&logHandler{w: l.wk.w, job: l.job})
	}
	return l.log
}

func (l *jobLink) Callback(ctx context.Context, name string, in, out any) error {
	data, err := wire.Marshal(in)
	if err != nil {
		return fmt.Errorf("callback %s: encode input: %w", name, err)
	}
	seq := l.wk.seq.Add(1)
	ch := make(chan *wire.CallbackReply, 1)
	l.wk.mu.Lock()
	l.wk.pending[seq] = ch
	l.wk.mu.Unlock()
	if err := l.wk.w.WriteValue(wire.KindCallback, l.job, &wire.CallbackRequest{Seq: seq, Name: name, Data: data}); err != nil {
		return fmt.Errorf("callback %s: %w", name, err)
	}
	rep, err := l.wk.awaitReply(ctx, ch)
	if err != nil {
		l.wk.mu.Lock()
		delete(l.wk.pending, seq)
		l.wk.mu.Unlock()
		return fmt.Errorf("callback %s: %w", name, err)
	}
	return callbackResult(name, rep, out)
}

// callbackResult turns a callback's reply into callback.Call's outcome.
func callbackResult(name string, rep *wire.CallbackReply, out any) error {
	if rep.Err != nil {
		return &callback.Error{Name: name, Kind: rep.Err.Kind, Message: rep.Err.Message}
	}
	if out == nil || len(rep.Data) == 0 {
		return nil
	}
	if err := wire.Unmarshal(rep.Data, out); err != nil {
		return &callback.Error{Name: name, Kind: wire.ErrKindDecode, Message: fmt.Sprintf("reply does not decode into %T: %v", out, err)}
	}
	return nil
}

// logHandler sends slog records to the master as job's.
type logHandler struct {
	w     *wire.Writer
	job   uint32
	attrs []string
	group string
}

func (h *logHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *logHandler) Handle(_ context.Context, r slog.Record) error {
	rec := wire.LogRecord{TimeUnixNano: r.Time.UnixNano(), Level: int(r.Level), Message: r.Message, Attrs: h.attrs}
	if r.Time.IsZero() {
		rec.TimeUnixNano = time.Now().UnixNano()
	}
	r.Attrs(func(a slog.Attr) bool {
		rec.Attrs = append(rec.Attrs, h.group+a.Key, a.Value.String())
		return true
	})
	return h.w.WriteValue(wire.KindLog, h.job, &rec)
}

func (h *logHandler) WithAttrs(as []slog.Attr) slog.Handler {
	h2 := *h
	h2.attrs = append([]string(nil), h.attrs...)
	for _, a := range as {
		h2.attrs = append(h2.attrs, h.group+a.Key, a.Value.String())
	}
	return &h2
}

func (h *logHandler) WithGroup(name string) slog.Handler {
	h2 := *h
	h2.group = h.group + name + "."
	return &h2
}
