package remote

import (
	"bytes"
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/toworker/toworker/internal/sshdial"
	"github.com/toworker/toworker/internal/wire"
)

// SSHOptions are ssh's command-line overrides (-F, -l, -p, -i, -J, -o). The
// zero value reads ~/.ssh/config, /etc/ssh/ssh_config, known_hosts and the
// ssh-agent like ssh does.
type SSHOptions struct {
	ConfigFile    string   // -F: read only this file
	User          string   // -l
	Port          int      // -p
	IdentityFiles []string // -i
	JumpHosts     string   // -J
	Options       []string // -o Key=Value
	// Warn receives warnings (for example StrictHostKeyChecking=no);
	// nil means os.Stderr.
	Warn io.Writer
}

func (o SSHOptions) dialOptions() sshdial.Options {
	return sshdial.Options{ConfigFile: o.ConfigFile, User: o.User, Port: o.Port,
		IdentityFiles: o.IdentityFiles, JumpHosts: o.JumpHosts, Options: o.Options, Warn: o.Warn}
}

// PoolConfig configures a Pool. The zero value of every field works.
type PoolConfig struct {
	// Hosts the pool runs jobs on. A job whose Host is not listed adds it.
	Hosts []string
	// MaxPerHost is how many jobs run at once on a host, each in its own
	// worker process. Zero means 4.
	MaxPerHost int
	// Pipeline is how many calls beyond MaxPerHost the master keeps sent
	// to a host, so that its workers go from one call straight to the next
	// instead of waiting a round trip for the master to send it. At most
	// MaxPerHost calls still run at once, Inline functions' (such as the
	// built-in agent.Exec) included; the others wait on the agent: small
	// calls (up to 16 KiB of input) queued on busy workers, up to 8 behind
	// each running call, larger ones and Inline ones in the agent until a
	// job ends. For many short calls: a call queued behind a long one waits for
	// it, although another worker may free up first. The job's Timeout and
	// Result.Duration count from when the call is sent, waiting included.
	// A call cancelled, or timed out, while it waits on the agent never
	// starts. Zero means none: a call is sent only when a worker is free
	// for it.
	Pipeline int
	// MinWarm is how many idle workers each host keeps started before any
	// job, so the first jobs do not wait for a process to start. Zero
	// means 1; negative means none.
	MinWarm int
	// Timeout is each job's time limit; a job past it is killed with its
	// processes. A wait for the host's connection is bounded by it too;
	// then the limit runs from the moment the job's call is sent, and
	// covers sending its input: a large input still on its way when it
	// passes is not sent further. Zero means 30 s; negative means no limit.
	Timeout time.Duration
	// MaxJobsPerWorker recycles a worker after that many jobs. Zero means
	// never.
	MaxJobsPerWorker int
	// Retries is how many more times a job that failed in transport is
	// tried, on another host when there is one.
	Retries int
	// Init names a registered function run once in each new worker
	// before its first job (with no input). If it fails, the jobs given to
	// that worker fail with KindInit.
	Init string
	// ConnectTimeout bounds connecting to a host and starting its agent.
	// Zero means 30 s.
	ConnectTimeout time.Duration
	// Fanout bounds connections being set up at once. Zero means 64.
	Fanout int
	// StopWait bounds how long Close and Kill wait for each agent to say
	// it has stopped (its workers and their processes killed) once told
	// to, before they close the connection anyway. Zero means 2 s.
	// Negative means they do not wait: the connection is closed right
	// after the master's goodbye, which the agent reads and stops on as
	// it would if the connection just dropped, a round trip later than
	// Close returns. For a program about to exit, like the toworker
	// command, that is a round trip saved. Kill closes a connection still
	// busy StopWait plus one second after it was called (a job stuck
	// writing into a silent link), whatever is left on it.
	StopWait time.Duration
	// KeepAlive is the interval of the master's pings to each agent; three
	// unanswered intervals end the connection (on both sides). Zero means
	// 5 s; negative means none: a link that goes silent is then not
	// noticed, and a job writing an input larger than the SSH window
	// (2 MiB) into it waits until Kill.
	KeepAlive time.Duration
	// IdleTimeout closes a host's connection, stopping its agent and
	// workers there, once no job has run on it for that long, as ssh's
	// ControlPersist does; the host's next job connects again (a cold
	// start: the agent stays in the host's cache). Zero means never (for
	// the pool of DoRemoteJob and Call, 10 minutes); negative means never.
	IdleTimeout time.Duration
	// MaxMessage caps one message (a job's result, a callback's input)
	// the master accepts from a host. Zero means 256 MiB.
	MaxMessage int
	// QueueSize bounds the jobs waiting for a free worker slot. When the
	// queue is full, Submit waits for room or for its context to end (the
	// run then fails with the context's error). Retried jobs go back ahead
	// of the queue without counting against it. Zero means 65,536.
	QueueSize int
	// SSH overrides the ssh configuration.
	SSH SSHOptions
	// Agent chooses the agent binary.
	Agent AgentOptions
	// Logger receives the jobs' log records (callback.Logger). Nil means
	// slog.Default().
	Logger *slog.Logger
	// Stdout and Stderr receive the prefixed output lines of jobs that
	// have no OnOutput/OnError. Nil means os.Stdout and os.Stderr.
	Stdout, Stderr io.Writer
}

func (c *PoolConfig) setDefaults() {
	if c.MaxPerHost <= 0 {
		c.MaxPerHost = 4
	}
	if c.MinWarm == 0 {
		c.MinWarm = 1
	}
	if c.MinWarm < 0 {
		c.MinWarm = 0
	}
	if c.MinWarm > c.MaxPerHost {
		c.MinWarm = c.MaxPerHost
	}
	if c.Timeout == 0 {
		c.Timeout = 30 * time.Second
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = 30 * time.Second
	}
	if c.Fanout <= 0 {
		c.Fanout = 64
	}
	if c.KeepAlive == 0 {
		c.KeepAlive = 5 * time.Second
	}
	if c.Pipeline < 0 {
		c.Pipeline = 0
	}
	if c.StopWait == 0 {
		c.StopWait = 2 * time.Second
	}
	if c.QueueSize <= 0 {
		c.QueueSize = 1 << 16
	}
	if c.Stdout == nil {
		c.Stdout = os.Stdout
	}
	if c.Stderr == nil {
		c.Stderr = os.Stderr
	}
}

// Pool runs jobs on a set of hosts: one SSH connection and one agent per
// host, up to MaxPerHost jobs at once on each, a FIFO queue for the rest.
// Its methods are safe for concurrent use.
type Pool struct {
	cfg      PoolConfig // static after NewPool (defaults filled in)
	dynamic  bool       // the default pool: no completion list
	ctx      context.Context
	kill     context.CancelFunc
	connOpts connectOptions
	connSem  chan struct{}
	outMu    sync.Mutex // serialises printLine

	mu        sync.Mutex // guards the fields below
	hosts     map[string]*hostState
	order     []*hostState
	queue     []*Run
	completed list.List // *Run finished and not yet taken (not for the default pool)
	pending   int       // submitted runs whose outcome has not been taken
	running   int
	closed    bool
	changed   chan struct{} // closed and replaced when a run completes
	tasks     chan task     // to idle runner goroutines; unbuffered
	room      chan struct{} // one token per run admitted to the queue
	total     counters

	wg sync.WaitGroup // execute goroutines, connectors, the janitor
}

// NewPool starts a pool and begins connecting to its hosts in the
// background. Connection errors do not fail NewPool: they are reported
// through the jobs that needed the host and through Stats.
func NewPool(ctx context.Context, cfg PoolConfig) (*Pool, error) {
	return newPool(ctx, cfg, false)
}

func newPool(ctx context.Context, cfg PoolConfig, dynamic bool) (*Pool, error) {
	cfg.setDefaults()
	agents, err := agentsFor(cfg.Agent)
	if err != nil {
		return nil, err
	}
	pctx, kill := context.WithCancel(context.WithoutCancel(ctx))
	p := &Pool{
		cfg: cfg, dynamic: dynamic, ctx: pctx, kill: kill,
		connSem: make(chan struct{}, cfg.Fanout),
		hosts:   make(map[string]*hostState),
		changed: make(chan struct{}),
		tasks:   make(chan task),
		room:    make(chan struct{}, cfg.QueueSize),
	}
	ping := cfg.KeepAlive
	if ping < 0 {
		ping = 0
	}
	maxWorkers := 0 // without pipelining, the master's slots bound them
	if cfg.Pipeline > 0 {
		maxWorkers = cfg.MaxPerHost
	}
	p.connOpts = connectOptions{
		ssh:    cfg.SSH.dialOptions(),
		agents: agents,
		hello: wire.Hello{Version: wire.Version, Role: "master", MinWarm: cfg.MinWarm,
			MaxJobsPerWorker: cfg.MaxJobsPerWorker, Init: cfg.Init, MaxWorkers: maxWorkers, PingSeconds: int((ping + time.Second - 1) / time.Second)},
		maxMsg:   cfg.MaxMessage,
		pingIntv: ping,
		stopWait: max(cfg.StopWait, 0),
	}
	p.mu.Lock()
	for _, h := range cfg.Hosts {
		if h == "" {
			p.mu.Unlock()
			kill()
			return nil, errors.New("remote: NewPool: empty host name in Hosts")
		}
		p.addHostLocked(h)
	}
	p.mu.Unlock()
	if !dynamic {
		for _, h := range p.order {
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.conn(h)
			}()
		}
	}
	p.wg.Add(1)
	go p.janitor()
	return p, nil
}

// hostState is the pool's view of one host.
type hostState struct {
	name string
	// inFlight mirrors busy, for readers without Pool.mu: calls sent or
	// about to be sent to the host.
	inFlight atomic.Int32

	// guarded by Pool.mu:
	conn        *hostConn
	connecting  chan struct{} // closed when the dial under way ends
	connErr     error         // the last dial's error
	busy        int
	down        bool
	retryAt     time.Time
	backoff     time.Duration
	connectedAt time.Time
	lastErr     error
	st          counters
	busySince   time.Time     // when busy last changed
	busyTime    time.Duration // ∫ busy dt
	idleTime    time.Duration // time with no job running while connected
}

func (p *Pool) addHostLocked(name string) *hostState {
	if h, ok := p.hosts[name]; ok {
		return h
	}
	h := &hostState{name: name, busySince: time.Now()}
	p.hosts[name] = h
	p.order = append(p.order, h)
	return h
}

// Submit queues job and returns its Run. It does not block: the queue is
// bounded only by memory the caller chooses to spend (each queued Run holds
// its encoded input). A job that cannot be submitted (closed pool, input
// that does not encode) gets a Run that is already done with the error.
func (p *Pool) Submit(ctx context.Context, job Job) *Run { return p.submit(ctx, job, false) }

// submit is Submit. With sync, when a host slot is free at once, the first
// attempt runs in the calling goroutine before submit returns (for callers
// that wait anyway, like CallOn): no hand-off to a runner and back.
func (p *Pool) submit(ctx context.Context, job Job, sync bool) *Run {
	r := &Run{job: job, ctx: ctx, pool: p, done: make(chan struct{})}
	if ctx == nil {
		r.ctx = context.Background()
	}
	var err error
	switch {
	case job.Func == "":
		err = errNoFunc
	case job.Data != nil:
		if r.data, r.dataTail, err = wire.EncodeData(job.Data); err != nil {
			err = fmt.Errorf("remote: encode data for %s: %w", job.Func, err)
		}
		if !sync && r.dataTail != nil {
			// A large []byte is sent from the caller's slice by CallOn,
			// which returns only when the call is over; Submit returns at
			// once, and the caller may reuse its buffer.
			r.dataTail = bytes.Clone(r.dataTail)
		}
	}
	if err == nil {
		select {
		case p.room <- struct{}{}:
			r.admitted = true
		case <-r.ctx.Done():
			err = fmt.Errorf("remote: queue full (%d jobs): %w", p.cfg.QueueSize, context.Cause(r.ctx))
		}
	}
	if err == nil && r.ctx.Done() != nil {
		// A cancelled context takes the run out of the queue at once.
		r.stopDequeue = context.AfterFunc(r.ctx, func() { p.dequeue(r, context.Cause(r.ctx)) })
	}
	p.mu.Lock()
	p.pending++
	if err == nil && p.closed {
		err = ErrClosed
	}
	if err == nil && job.Host == "" && len(p.order) == 0 {
		err = errors.New("remote: job has no Host and the pool has no hosts")
	}
	if err != nil {
		p.leaveQueueLocked(r)
		p.mu.Unlock()
		p.complete(r, Result{Func: job.Func, Desc: job.Desc}, err)
		return r
	}
	if job.Host != "" {
		h := p.addHostLocked(job.Host)
		h.st.submitted++
	}
	p.total.submitted++
	r.queuedAt = time.Now()
	p.queue = append(p.queue, r)
	r.sync = sync
	p.dispatchLocked()
	r.sync = false
	h := r.syncHost
	r.syncHost = nil
	if h != nil {
		p.wg.Add(1)
	}
	p.mu.Unlock()
	if h != nil {
		p.execute(r, h, nil)
		p.wg.Done()
	}
	return r
}

// dequeue fails a run still waiting in the queue.
func (p *Pool) dequeue(r *Run, err error) {
	p.mu.Lock()
	for i, q := range p.queue {
		if q == r {
			p.queue = append(p.queue[:i], p.queue[i+1:]...)
			p.leaveQueueLocked(r)
			p.mu.Unlock()
			p.complete(r, Result{Func: r.job.Func, Desc: r.job.Desc, Host: r.job.Host, Attempts: r.attempts},
				&RemoteError{Host: r.job.Host, Desc: r.job.Desc, Func: r.job.Func, Kind: KindCanceled,
					Message: "cancelled while queued", cause: err})
			return
		}
	}
	p.mu.Unlock()
}

// dispatchLocked starts queued runs on hosts with a free slot, in queue
// order. p.mu is held.
func (p *Pool) dispatchLocked() {
	if len(p.queue) == 0 || p.ctx.Err() != nil {
		return
	}
	now := time.Now()
	free := 0
	for _, h := range p.order {
		if p.usable(h, now) {
			free += p.slots() - h.busy
		}
	}
	kept := p.queue[:0]
	for i, r := range p.queue {
		if free <= 0 {
			kept = append(kept, p.queue[i:]...)
			break
		}
		h := p.pickLocked(r, now)
		if h == nil {
			kept = append(kept, r)
			continue
		}
		free--
		p.leaveQueueLocked(r)
		p.setBusyLocked(h, h.busy+1, now)
		h.st.running++
		p.total.running++
		r.attempts++
		p.running++
		if r.sync {
			r.syncHost = h // submit runs it in its caller's goroutine
			continue
		}
		p.goExecute(task{r, h})
	}
	clear(p.queue[len(kept):])
	p.queue = kept
}

// leaveQueueLocked gives back r's queue slot when it first leaves the
// queue. p.mu is held.
func (p *Pool) leaveQueueLocked(r *Run) {
	if r.admitted {
		r.admitted = false
		<-p.room
	}
}

// slots is how many calls the pool keeps sent to a host at once.
func (p *Pool) slots() int { return p.cfg.MaxPerHost + p.cfg.Pipeline }

func (p *Pool) usable(h *hostState, now time.Time) bool {
	return !h.down || !now.Before(h.retryAt)
}

// pickLocked chooses the host for r: its own Host if set, otherwise the
// least busy usable host with a free slot, avoiding hosts r already failed
// on while there are others.
func (p *Pool) pickLocked(r *Run, now time.Time) *hostState {
	if r.job.Host != "" {
		h := p.hosts[r.job.Host]
		if h != nil && p.usable(h, now) && h.busy < p.slots() {
			return h
		}
		return nil
	}
	avoid := len(r.excluded) > 0 && len(r.excluded) < len(p.order)
	var best *hostState
	for _, h := range p.order {
		if !p.usable(h, now) || h.busy >= p.slots() || (avoid && r.excluded[h.name]) {
			continue
		}
		if best == nil || h.busy < best.busy {
			best = h
		}
	}
	return best
}

func (p *Pool) setBusyLocked(h *hostState, n int, now time.Time) {
	dt := now.Sub(h.busySince)
	h.busyTime += time.Duration(min(h.busy, p.cfg.MaxPerHost)) * dt
	if h.busy == 0 && h.conn != nil {
		h.idleTime += dt
	}
	h.busy = n
	h.inFlight.Store(int32(n))
	h.busySince = now
}

// task is an attempt to run.
type task struct {
	r *Run
	h *hostState
}

// runnerIdle is how long a runner goroutine waits for another task.
const runnerIdle = 10 * time.Second

// goExecute runs t in an idle runner goroutine, or a new one. Runners are
// reused so that the stacks they grew (an attempt's call path goes deep into
// the SSH and crypto code) are too. It never blocks.
func (p *Pool) goExecute(t task) {
	select {
	case p.tasks <- t:
	default:
		p.wg.Add(1)
		go p.runner(t)
	}
}

func (p *Pool) runner(t task) {
	defer p.wg.Done()
	idle := time.NewTimer(runnerIdle)
	defer idle.Stop()
	timeout := time.NewTimer(time.Hour) // each attempt's, reset for it
	timeout.Stop()
	for {
		p.execute(t.r, t.h, timeout)
		idle.Reset(runnerIdle)
		select {
		case t = <-p.tasks:
		case <-idle.C:
			return
		case <-p.ctx.Done():
			return
		}
	}
}

// execute runs one attempt of r on h and records its outcome.
func (p *Pool) execute(r *Run, h *hostState, timer *time.Timer) {
	timeout := p.cfg.Timeout
	if r.job.Timeout != 0 {
		timeout = r.job.Timeout
	}
	var o outcome
	a := newAttempt(p, r, h.name)
	a.hostInFlight = &h.inFlight
	call := a.call(timeout)
	var deadline time.Time
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	c, err := p.connFor(h, a, call, deadline)
	if err != nil {
		o.failure = err
	} else {
		o = a.exec(c, call, timeout, timer)
	}
	p.attemptDone(r, h, c, o)
}

// conn returns h's live connection, dialling it if needed; concurrent
// callers share one dial.
func (p *Pool) conn(h *hostState) (*hostConn, error) { return p.connFor(h, nil, nil, time.Time{}) }

// connFor is conn for an attempt: when this call starts a dial, first's
// call is pipelined with the bootstrap (first.id is then set).
//
// The dial runs in a goroutine of the pool, bounded by ConnectTimeout only:
// an attempt stops waiting for it at its deadline (a job's timeout covers
// connecting), but the dial goes on, so that a host whose first connection
// takes longer than a job's timeout (an agent upload on a slow link) is
// still connected for the jobs after it. A zero deadline means none.
func (p *Pool) connFor(h *hostState, first *attempt, firstCall *wire.Call, deadline time.Time) (*hostConn, error) {
	var expired <-chan time.Time // made when there is a dial to wait for
	p.mu.Lock()
	for {
		if h.conn != nil && h.conn.alive() {
			c := h.conn
			p.mu.Unlock()
			return c, nil
		}
		if h.connecting == nil {
			p.startDialLocked(h, first, firstCall)
		}
		ch := h.connecting
		p.mu.Unlock()
		if expired == nil && !deadline.IsZero() {
			t := time.NewTimer(time.Until(deadline))
			defer t.Stop()
			expired = t.C
		}
		select {
		case <-ch:
		case <-expired:
			p.mu.Lock()
			select {
			case <-ch: // the dial ended meanwhile: take its outcome
				expired = nil
			default:
				if first != nil {
					first.abandoned = true
				}
				p.mu.Unlock()
				if first != nil {
					first.stop()
				}
				return nil, &FailureError{Host: h.name, Op: "connect", Err: fmt.Errorf("%w while waiting for the connection", ErrTimeout)}
			}
			p.mu.Unlock()
		case <-p.ctx.Done():
			return nil, &FailureError{Host: h.name, Op: "connect", Err: ErrClosed}
		}
		p.mu.Lock()
		if h.connErr != nil && (h.conn == nil || !h.conn.alive()) {
			err := h.connErr
			p.mu.Unlock()
			return nil, err
		}
		first = nil // another dial, if any, is not this attempt's
	}
}

// startDialLocked starts dialling h in a goroutine counted in p.wg (the
// caller is a runner, counted too, so the count is above zero). h.connecting
// is closed, with p.mu held, once h's state says how the dial went. p.mu is
// held.
func (p *Pool) startDialLocked(h *hostState, first *attempt, firstCall *wire.Call) {
	if old := h.conn; old != nil {
		h.conn = nil
		p.wg.Add(1)
		go func() { defer p.wg.Done(); old.close() }()
	}
	ch := make(chan struct{})
	h.connecting = ch
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.dial(h, ch, first, firstCall)
	}()
}

// dial connects to h and records the outcome. A first attempt that gave
// up waiting is not sent, or is cancelled on the host if it was already.
func (p *Pool) dial(h *hostState, ch chan struct{}, first *attempt, firstCall *wire.Call) {
	var c *hostConn
	var err error
	select {
	case p.connSem <- struct{}{}:
		ctx, cancel := context.WithTimeout(p.ctx, p.cfg.ConnectTimeout)
		opts := p.connOpts
		opts.hello.Host = h.name
		opts.uploaded = func(n int) {
			p.mu.Lock()
			h.st.uploads++
			p.total.uploads++
			p.mu.Unlock()
		}
		if first != nil {
			opts.firstWanted = func() bool {
				p.mu.Lock()
				defer p.mu.Unlock()
				return !first.abandoned
			}
		}
		c, err = dialHost(ctx, h.name, opts, first, firstCall)
		cancel()
		<-p.connSem
	case <-p.ctx.Done():
		err = &FailureError{Host: h.name, Op: "connect", Err: ErrClosed}
	}

	p.mu.Lock()
	h.connecting = nil
	h.connErr = err
	now := time.Now()
	if err != nil {
		h.lastErr = err
		p.markDownLocked(h, now)
	} else if p.ctx.Err() != nil {
		h.connErr = &FailureError{Host: h.name, Op: "connect", Err: ErrClosed}
		close(ch)
		p.mu.Unlock()
		c.close()
		return
	} else {
		h.conn = c
		c.closeOnKill(p.ctx)
		h.down = false
		h.backoff = 0
		h.connectedAt = now
		h.busySince = now
		if c.envStart {
			h.st.envStarts++
			p.total.envStarts++
		}
	}
	orphan := err == nil && first != nil && first.abandoned && first.conn == c
	p.dispatchLocked()
	close(ch)
	p.mu.Unlock()
	if orphan {
		c.cancel(first.id) // sent with the bootstrap before it was given up
	}
}

// markDownLocked takes h out of rotation until its back-off passes.
func (p *Pool) markDownLocked(h *hostState, now time.Time) {
	if h.backoff == 0 {
		h.backoff = 500 * time.Millisecond
	} else if h.backoff < 30*time.Second {
		h.backoff *= 2
	}
	h.down = true
	h.retryAt = now.Add(h.backoff)
}

// attemptDone records an attempt's outcome: the run completes, or goes back
// to the queue for another attempt after a transport failure.
func (p *Pool) attemptDone(r *Run, h *hostState, c *hostConn, o outcome) {
	now := time.Now()
	p.mu.Lock()
	p.setBusyLocked(h, h.busy-1, now)
	h.st.running--
	p.total.running--
	p.running--
	if o.failure != nil {
		h.lastErr = o.failure
		if c != nil && !c.alive() && h.conn == c {
			p.markDownLocked(h, now)
		}
		retry := !r.job.NoRetry && r.attempts <= p.cfg.Retries && !p.closed && p.ctx.Err() == nil && r.ctx.Err() == nil
		p.mu.Unlock()
		if r.job.OnFailure != nil {
			r.job.OnFailure(o.failure)
		}
		if retry {
			p.mu.Lock()
			if r.excluded == nil {
				r.excluded = make(map[string]bool)
			}
			r.excluded[h.name] = true
			h.st.retried++
			p.total.retried++
			p.queue = append([]*Run{r}, p.queue...)
			p.dispatchLocked()
			p.mu.Unlock()
			return
		}
		p.complete(r, Result{Host: h.name, Func: r.job.Func, Desc: r.job.Desc, Attempts: r.attempts}, o.failure)
		p.mu.Lock()
		h.st.failed++
		p.total.failed++
		p.dispatchLocked()
		p.mu.Unlock()
		return
	}
	if o.err != nil && o.res.Err == nil {
		h.st.failed++
		p.total.failed++
	} else {
		h.st.done++
		p.total.done++
	}
	p.dispatchLocked()
	p.mu.Unlock()
	o.res.Attempts = r.attempts
	if o.res.Host == "" {
		o.res.Host, o.res.Func, o.res.Desc = h.name, r.job.Func, r.job.Desc
	}
	p.complete(r, o.res, o.err)
}

// complete sets a run's outcome, calls its handlers, and wakes Wait and
// Next.
func (p *Pool) complete(r *Run, res Result, err error) {
	if r.stopDequeue != nil {
		r.stopDequeue()
	}
	if err == nil || res.Err != nil {
		if r.job.WhenDone != nil && (err == nil || res.Err != nil) && res.Err == err {
			r.job.WhenDone(res)
		}
	}
	if r.job.AllDone != nil {
		r.job.AllDone()
	}
	p.mu.Lock()
	r.res, r.err = res, err
	if !p.dynamic && !r.taken {
		r.inDone = true
		p.completed.PushBack(r)
	} else if p.dynamic {
		p.pending--
		r.taken = true
	}
	close(r.done)
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
}

// take marks r's outcome as taken by its caller.
func (p *Pool) take(r *Run) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if r.taken {
		return
	}
	r.taken = true
	p.pending--
	if r.inDone {
		for e := p.completed.Front(); e != nil; e = e.Next() {
			if e.Value.(*Run) == r {
				p.completed.Remove(e)
				break
			}
		}
		r.inDone = false
	}
}

// Next returns the next finished run, in completion order, waiting for one
// if none has finished yet. Its Wait returns at once. It returns
// ErrNoPending when every submitted run has been taken, or ctx's error.
func (p *Pool) Next(ctx context.Context) (*Run, error) {
	for {
		p.mu.Lock()
		if r := p.popCompletedLocked(); r != nil {
			p.mu.Unlock()
			return r, nil
		}
		if p.pending == 0 {
			p.mu.Unlock()
			return nil, ErrNoPending
		}
		ch := p.changed
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// TryNext returns the next finished run if there is one, without waiting.
func (p *Pool) TryNext() (*Run, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.popCompletedLocked()
	return r, r != nil
}

func (p *Pool) popCompletedLocked() *Run {
	e := p.completed.Front()
	if e == nil {
		return nil
	}
	r := p.completed.Remove(e).(*Run)
	r.inDone = false
	r.taken = true
	p.pending--
	return r
}

// Pending returns the number of submitted runs whose outcome has not yet
// been taken by Next, TryNext or Wait.
func (p *Pool) Pending() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pending
}

// janitor wakes the queue when a host's back-off has passed and fails jobs
// pinned to a host that stayed unreachable for their whole timeout.
func (p *Pool) janitor() {
	defer p.wg.Done()
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		var expired []*Run
		p.mu.Lock()
		kept := p.queue[:0]
		for _, r := range p.queue {
			h := p.hosts[r.job.Host]
			timeout := p.cfg.Timeout
			if r.job.Timeout != 0 {
				timeout = r.job.Timeout
			}
			if h != nil && h.down && timeout > 0 && now.Sub(r.queuedAt) > timeout {
				p.leaveQueueLocked(r)
				expired = append(expired, r)
				continue
			}
			kept = append(kept, r)
		}
		clear(p.queue[len(kept):])
		p.queue = kept
		p.dispatchLocked()
		idle := p.idleConnsLocked(now)
		p.mu.Unlock()
		for _, c := range idle {
			p.wg.Add(1)
			go func() { defer p.wg.Done(); c.close() }()
		}
		for _, r := range expired {
			p.mu.Lock()
			last := p.hosts[r.job.Host].lastErr
			p.total.failed++
			p.mu.Unlock()
			p.complete(r, Result{Host: r.job.Host, Func: r.job.Func, Desc: r.job.Desc, Attempts: r.attempts},
				&FailureError{Host: r.job.Host, Desc: r.job.Desc, Op: "connect", Err: fmt.Errorf("%w for the job's whole timeout; last error: %v", ErrHostDown, last)})
		}
	}
}

// idleConnsLocked detaches the connections of hosts with no job for
// IdleTimeout, for the caller to close; the host's next job dials anew.
// p.mu is held.
func (p *Pool) idleConnsLocked(now time.Time) []*hostConn {
	if p.cfg.IdleTimeout <= 0 {
		return nil
	}
	var idle []*hostConn
	for _, h := range p.order {
		if h.conn == nil || h.busy > 0 || h.connecting != nil || now.Sub(h.busySince) < p.cfg.IdleTimeout {
			continue
		}
		p.setBusyLocked(h, 0, now) // counts the idle time so far
		idle = append(idle, h.conn)
		h.conn = nil
		h.connectedAt = time.Time{}
		h.st.idleCloses++
		p.total.idleCloses++
	}
	return idle
}

// Close stops taking jobs, lets queued and running jobs finish, then stops
// every agent (each kills its workers and exits) and returns. After Close no
// goroutine of the pool is left.
func (p *Pool) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	for {
		p.mu.Lock()
		idle := len(p.queue) == 0 && p.running == 0
		ch := p.changed
		p.mu.Unlock()
		if idle || p.ctx.Err() != nil {
			break
		}
		select {
		case <-ch:
		case <-p.ctx.Done():
		}
	}
	p.shutdown()
	return nil
}

// Kill stops at once: running jobs are cancelled (their remote processes
// killed), queued jobs fail with ErrClosed, and every agent stops.
func (p *Pool) Kill() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.kill()
	p.shutdown()
}

// shutdown fails what is queued, closes every connection and waits for the
// pool's goroutines.
func (p *Pool) shutdown() {
	p.kill()
	p.mu.Lock()
	queued := p.queue
	p.queue = nil
	for _, r := range queued {
		p.leaveQueueLocked(r)
	}
	p.mu.Unlock()
	for _, r := range queued {
		p.complete(r, Result{Host: r.job.Host, Func: r.job.Func, Desc: r.job.Desc}, ErrClosed)
	}
	p.wg.Wait() // attempts see p.ctx and return; connectors finish
	p.mu.Lock()
	var conns []*hostConn
	for _, h := range p.order {
		if h.conn != nil {
			conns = append(conns, h.conn)
			h.conn = nil
		}
	}
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() { defer wg.Done(); c.close() }()
	}
	wg.Wait()
}

// printLine writes one prefixed output line in a single write.
func (p *Pool) printLine(stream int, prefix string, line []byte) {
	w := p.cfg.Stdout
	if stream == 1 {
		w = p.cfg.Stderr
	}
	buf := make([]byte, 0, len(prefix)+len(line)+1)
	buf = append(append(append(buf, prefix...), line...), '\n')
	p.outMu.Lock()
	w.Write(buf)
	p.outMu.Unlock()
}
