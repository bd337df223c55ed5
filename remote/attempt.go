package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/toworker/toworker/internal/wire"
)

// eventQueue is how many events (output chunks of up to 32 KiB, log
// records, the result) wait for an attempt's goroutine before the
// connection's reader blocks: up to 256 KiB of output per job. Its buffer
// is allocated with every attempt, so a longer queue costs every call
// (32 events: 10 % fewer pipelined calls/s).
const eventQueue = 8

// maxLine bounds a line held back waiting for its newline; longer lines are
// delivered in pieces of this size.
const maxLine = 64 << 10

// event is something the connection's reader hands to an attempt. Events of
// one attempt are handled in order by the attempt's own goroutine, so a slow
// output handler holds back only its own job (until the bounded queue fills,
// which then slows the connection: back-pressure instead of unbounded
// memory).
type event struct {
	kind   wire.Kind
	data   []byte
	log    *wire.LogRecord
	result *wire.Result
	fail   error
}

// attempt is one try of a Run on one host connection.
type attempt struct {
	run  *Run
	host string
	pool *Pool
	id   uint32    // set by hostConn.start
	conn *hostConn // set by hostConn.start

	events chan event    // from the reader; bounded
	quit   chan struct{} // closed when the attempt stops listening

	// The context of the attempt's callback handlers, made with the first
	// callback and cancelled when the attempt stops (or the pool is
	// killed), so that no handler outlives the job it serves.
	hmu     sync.Mutex
	hctx    context.Context
	hcancel context.CancelFunc
	stopped bool // guarded by hmu

	lines [2][]byte // partial stdout, stderr lines; owned by the attempt goroutine

	// hostInFlight is the host's count of calls sent or about to be.
	hostInFlight *atomic.Int32

	// abandoned: the attempt stopped waiting for the connection it asked
	// to be dialled (its deadline passed); guarded by pool.mu.
	abandoned bool
}

func newAttempt(p *Pool, r *Run, host string) *attempt {
	return &attempt{run: r, host: host, pool: p, events: make(chan event, eventQueue), quit: make(chan struct{})}
}

// push hands an event to the attempt, waiting while its queue is full.
func (a *attempt) push(ev event) {
	select {
	case a.events <- ev:
		return
	case <-a.quit:
		return
	default:
	}
	// The job's handler is behind: wait, and tell the keepalive that the
	// silence that follows is ours, not the agent's.
	c := a.conn
	c.readerWaiting.Store(true)
	select {
	case a.events <- ev:
	case <-a.quit:
	}
	c.readerWaiting.Store(false)
	c.alivePoke()
}

func (a *attempt) output(k wire.Kind, b []byte) { a.push(event{kind: k, data: b}) }
func (a *attempt) log(rec *wire.LogRecord)      { a.push(event{kind: wire.KindLog, log: rec}) }
func (a *attempt) result(res *wire.Result)      { a.push(event{kind: wire.KindResult, result: res}) }
func (a *attempt) fail(err error)               { a.push(event{fail: err}) }

// stop ends the attempt: the reader stops handing it events and its
// callback handlers' context is cancelled.
func (a *attempt) stop() {
	close(a.quit)
	a.hmu.Lock()
	a.stopped = true
	cancel := a.hcancel
	a.hmu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// handlerContext returns the context for the attempt's callback handlers:
// the job's, also cancelled when the attempt stops or the pool is killed.
func (a *attempt) handlerContext() context.Context {
	a.hmu.Lock()
	defer a.hmu.Unlock()
	if a.hctx == nil {
		ctx, cancel := context.WithCancel(a.run.ctx)
		stopKill := context.AfterFunc(a.pool.ctx, cancel)
		a.hctx = ctx
		a.hcancel = func() { stopKill(); cancel() }
		if a.stopped {
			a.hcancel()
		}
	}
	return a.hctx
}

// callback runs a callback handler in a goroutine of its own and sends its
// reply. It is called by the connection's reader, and the goroutine is
// counted in the connection's WaitGroup: closing the connection (as Close
// and Kill do) waits for it.
func (a *attempt) callback(req *wire.CallbackRequest) {
	c := a.conn
	ctx := a.handlerContext()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		rep := a.runCallback(ctx, req)
		c.w.WriteValue(wire.KindCallbackReply, a.id, rep)
	}()
}

func (a *attempt) runCallback(ctx context.Context, req *wire.CallbackRequest) (rep *wire.CallbackReply) {
	rep = &wire.CallbackReply{Seq: req.Seq}
	job := &a.run.job
	cb := job.Callbacks[req.Name]
	if cb == nil {
		rep.Err = &wire.Error{Kind: "unknown-callback", Message: fmt.Sprintf("the master has no callback %q for this job", req.Name)}
		return rep
	}
	defer func() {
		if p := recover(); p != nil {
			rep.Data = nil
			rep.Err = &wire.Error{Kind: wire.ErrKindPanic, Message: fmt.Sprintf("callback handler panicked: %v", p)}
		}
	}()
	out, err := cb(ctx, CallbackRequest{Name: req.Name, Host: a.host, Desc: job.Desc, LocalData: job.LocalData, data: req.Data})
	if err != nil {
		rep.Err = &wire.Error{Kind: wire.ErrKindFunc, Message: err.Error()}
		return rep
	}
	if out != nil {
		b, err := wire.Marshal(out)
		if err != nil {
			rep.Err = &wire.Error{Kind: wire.ErrKindDecode, Message: fmt.Sprintf("encode reply: %v", err)}
			return rep
		}
		rep.Data = b
	}
	return rep
}

// outcome is how an attempt ended: exactly one of res and failure is set,
// or err for a job-level error (timeout, cancellation) that is not retried.
type outcome struct {
	res     Result
	err     error // the job's error (function error, timeout, cancel); not retried
	failure error // transport failure; may be retried
}

// call is the wire form of the attempt's job.
func (a *attempt) call(timeout time.Duration) *wire.Call {
	r := a.run
	call := &wire.Call{Func: r.job.Func, Data: r.data, DataTail: r.dataTail, Chdir: r.job.Chdir, Desc: r.job.Desc}
	if timeout > 0 {
		call.TimeoutMillis = timeout.Milliseconds()
	}
	return call
}

// exec sends the call on c and handles the attempt's events until it ends.
// A timeout is timed with timer when given (a runner's, reused from call to
// call), else with a new one.
func (a *attempt) exec(c *hostConn, call *wire.Call, timeout time.Duration, timer *time.Timer) outcome {
	r := a.run
	var expired <-chan time.Time
	if timeout > 0 {
		if timer == nil {
			timer = time.NewTimer(timeout)
		} else {
			timer.Reset(timeout)
		}
		defer timer.Stop()
		expired = timer.C
	}
	start := time.Now()
	if a.conn == nil { // not already sent with the bootstrap
		var stop chan struct{}
		endWatch := func() {}
		if len(call.Data)+len(call.DataTail) > wire.ChunkSize {
			// A large input takes a while on a slow link: the job's end
			// (timeout, cancel, kill) stops it between frames.
			stop = make(chan struct{})
			endWatch = a.watchSend(stop, timeout)
		}
		err := c.start(a, call, stop)
		endWatch()
		if err != nil {
			if errors.Is(err, wire.ErrStopped) {
				if err != errNotSent { // the boss has part of the call: it drops it
					c.cancel(a.id)
				}
				a.stop()
				return a.stoppedOutcome()
			}
			a.stop()
			return outcome{failure: &FailureError{Host: a.host, Desc: r.job.Desc, Op: "run", Err: err}}
		}
	}
	for {
		select {
		case ev := <-a.events:
			if o, done := a.handle(ev, start); done {
				a.stop()
				return o
			}
		case <-r.ctx.Done():
			a.stop()
			c.cancel(a.id)
			a.flushLines()
			return outcome{err: a.stopError(false)}
		case <-expired:
			a.stop()
			c.cancel(a.id)
			a.flushLines()
			return outcome{err: a.stopError(r.ctx.Err() == nil)}
		case <-a.pool.ctx.Done():
			a.stop()
			c.cancel(a.id)
			a.flushLines()
			return outcome{err: fmt.Errorf("%w: job %q on %s killed", ErrClosed, r.job.Desc, a.host)}
		}
	}
}

// watchSend closes stop when the attempt's job ends before its call is
// sent: its timeout passes, its context ends, or the pool is killed. The
// returned func ends the watch.
func (a *attempt) watchSend(stop chan struct{}, timeout time.Duration) (end func()) {
	var expired <-chan time.Time
	var timer *time.Timer
	if timeout > 0 {
		timer = time.NewTimer(timeout)
		expired = timer.C
	}
	sent := make(chan struct{})
	go func() {
		select {
		case <-expired:
		case <-a.run.ctx.Done():
		case <-a.pool.ctx.Done():
		case <-sent:
			return
		}
		close(stop)
	}()
	return func() {
		close(sent)
		if timer != nil {
			timer.Stop()
		}
	}
}

// stoppedOutcome is the outcome of an attempt whose call was stopped before
// it was all sent: the pool was killed, its context ended, or its timeout
// passed.
func (a *attempt) stoppedOutcome() outcome {
	r := a.run
	switch {
	case a.pool.ctx.Err() != nil:
		return outcome{err: fmt.Errorf("%w: job %q on %s killed", ErrClosed, r.job.Desc, a.host)}
	case r.ctx.Err() != nil:
		return outcome{err: a.stopError(false)}
	}
	return outcome{err: a.stopError(true)}
}

// stopError is the error for an attempt stopped by its timeout (timedOut)
// or by its job's context.
func (a *attempt) stopError(timedOut bool) error {
	job := &a.run.job
	if timedOut {
		return &RemoteError{Host: a.host, Desc: job.Desc, Func: job.Func, Kind: KindTimeout,
			Message: "job ran past its timeout; its worker and every process it started were killed", cause: ErrTimeout}
	}
	return &RemoteError{Host: a.host, Desc: job.Desc, Func: job.Func, Kind: KindCanceled,
		Message: "job cancelled; its worker and every process it started were killed", cause: context.Cause(a.run.ctx)}
}

// handle processes one event; done reports the attempt's end.
func (a *attempt) handle(ev event, start time.Time) (outcome, bool) {
	job := &a.run.job
	switch {
	case ev.fail != nil:
		a.flushLines()
		return outcome{failure: ev.fail}, true
	case ev.kind == wire.KindStdout || ev.kind == wire.KindStderr:
		a.lines2(ev.kind, ev.data)
	case ev.kind == wire.KindLog:
		a.pool.logRecord(a.host, job, ev.log)
	case ev.kind == wire.KindResult:
		a.flushLines()
		res := Result{Host: a.host, Desc: job.Desc, Func: job.Func, Duration: time.Since(start),
			WorkerPID: ev.result.WorkerPID, WorkerJobs: ev.result.WorkerJobs, data: ev.result.Data}
		if ev.result.Err != nil {
			res.Err = remoteError(a.host, job, ev.result.Err)
			return outcome{res: res, err: res.Err}, true
		}
		return outcome{res: res}, true
	}
	return outcome{}, false
}

// lines2 splits output into lines and delivers the complete ones.
func (a *attempt) lines2(k wire.Kind, b []byte) {
	i := 0
	if k == wire.KindStderr {
		i = 1
	}
	buf := append(a.lines[i], b...)
	for {
		nl := bytes.IndexByte(buf, '\n')
		if nl < 0 {
			break
		}
		a.deliver(i, buf[:nl])
		buf = buf[nl+1:]
	}
	for len(buf) >= maxLine {
		a.deliver(i, buf[:maxLine])
		buf = buf[maxLine:]
	}
	a.lines[i] = append(a.lines[i][:0], buf...)
}

// flushLines delivers a last line that had no newline.
func (a *attempt) flushLines() {
	for i := range a.lines {
		if len(a.lines[i]) > 0 {
			a.deliver(i, a.lines[i])
			a.lines[i] = a.lines[i][:0]
		}
	}
}

func (a *attempt) deliver(stream int, line []byte) {
	line = bytes.TrimSuffix(line, []byte{'\r'})
	job := &a.run.job
	h := job.OnOutput
	if stream == 1 {
		h = job.OnError
	}
	if h != nil {
		h(string(line))
		return
	}
	prefix := job.Prefix
	if prefix == "" {
		prefix = a.host + ": "
	}
	a.pool.printLine(stream, prefix, line)
}

// logRecord passes a job's slog record to the pool's logger.
func (p *Pool) logRecord(host string, job *Job, rec *wire.LogRecord) {
	lg := p.cfg.Logger
	if lg == nil {
		lg = slog.Default()
	}
	attrs := []slog.Attr{slog.String("host", host), slog.String("func", job.Func)}
	if job.Desc != "" {
		attrs = append(attrs, slog.String("job", job.Desc))
	}
	for i := 0; i+1 < len(rec.Attrs); i += 2 {
		attrs = append(attrs, slog.String(rec.Attrs[i], rec.Attrs[i+1]))
	}
	r := slog.NewRecord(time.Unix(0, rec.TimeUnixNano), slog.Level(rec.Level), rec.Message, 0)
	r.AddAttrs(attrs...)
	if lg.Handler().Enabled(context.Background(), r.Level) {
		lg.Handler().Handle(context.Background(), r)
	}
}
