package remote

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/toworker/toworker/internal/sshdial"
	"github.com/toworker/toworker/internal/sshmux"
	"github.com/toworker/toworker/internal/wire"
)

// hostConn is one SSH connection to a host with the agent's boss running on
// it. Jobs share it; frames of many jobs interleave on it.
type hostConn struct {
	host   string
	tr     transport      // what the session runs over
	stdin  io.WriteCloser // the session's stdin
	w      *wire.Writer
	r      *wire.Reader
	agent  wire.Hello // the boss's hello; static after start
	stderr *tailBuffer

	mu      sync.Mutex // guards the fields below
	pending map[uint32]*attempt
	nextID  uint32
	err     error // sticky: why the connection ended
	closing bool

	done chan struct{} // closed when the reader has stopped and cleaned up

	// ended is closed when the session has ended; status (when statusOK)
	// and sessionErr are set before.
	ended      chan struct{}
	status     int
	statusOK   bool
	sessionErr error

	stopKillGuard func() bool // set by closeOnKill
	// For keepalive: when the reader last got a frame (Unix nanoseconds),
	// and whether it is waiting for a slow job's handler.
	lastRecv      atomic.Int64
	readerWaiting atomic.Bool
	// envStart: the agent started on the frames of the environment
	// variable, not waiting for stdin. Static after the bootstrap.
	envStart bool
	stopWait time.Duration // connectOptions.stopWait
	wg       sync.WaitGroup
}

// connectOptions are what a pool passes to open a host connection.
type connectOptions struct {
	ssh      sshdial.Options
	agents   *agentSet
	hello    wire.Hello
	maxMsg   int
	pingIntv time.Duration
	// stopWait bounds how long close waits for the agent to stop after
	// the bye (PoolConfig.StopWait); zero: it does not wait.
	stopWait time.Duration
	uploaded func(bytes int) // called when an agent is uploaded (for stats and tests)
	// firstWanted reports whether the first attempt still waits for this
	// connection (nil: it does); a first call no longer wanted is not sent.
	firstWanted func() bool
}

// warnTo is where warnings go: SSHOptions.Warn, or else stderr.
func (o connectOptions) warnTo() io.Writer {
	if o.ssh.Warn != nil {
		return o.ssh.Warn
	}
	return os.Stderr
}

// dialHost connects to host, puts the agent in place and starts it. Where
// the host's ssh_config names a ControlMaster socket (ControlPath) and a
// master is running there, the session goes through it, as ssh's would;
// otherwise, or when the master refuses the session, the connection is
// the master's own.
func dialHost(ctx context.Context, host string, o connectOptions, first *attempt, firstCall *wire.Call) (*hostConn, error) {
	t, err := sshdial.ResolveContext(ctx, host, o.ssh)
	if err != nil {
		return nil, &FailureError{Host: host, Op: "connect", Err: err}
	}
	if path := t.ControlSocket(); path != "" {
		c, err := startAgent(ctx, host, t, &muxTransport{path: path}, o, first, firstCall)
		if err == nil {
			return c, nil
		}
		var cm *controlMasterError
		if !errors.As(err, &cm) || ctx.Err() != nil {
			return nil, &FailureError{Host: host, Op: "bootstrap", Err: err}
		}
		if first != nil {
			first.conn, first.id = nil, 0 // its call never ran: not sent yet
		}
		// No master there (ssh goes on without a word), or one that
		// did not run the session (ssh says so, then goes on).
		if !sshmux.NoMaster(err) {
			fmt.Fprintf(o.warnTo(), "toworker: %s: %v; connecting directly\n", host, cm)
		}
	}
	client, err := sshdial.Dial(ctx, t, o.ssh)
	if err != nil {
		return nil, &FailureError{Host: host, Op: "connect", Err: err}
	}
	c, err := startAgent(ctx, host, t, sshTransport{client}, o, first, firstCall)
	if err != nil {
		client.Close()
		return nil, &FailureError{Host: host, Op: "bootstrap", Err: err}
	}
	return c, nil
}

// startAgent runs the bootstrap over tr and completes the handshake with
// the boss. When first is not nil its call is sent in the same write as
// the preamble, before the agent has answered: on a cached host the call
// costs no round trip of its own. tr is closed when startAgent fails.
func startAgent(ctx context.Context, host string, t *sshdial.Target, tr transport, o connectOptions, first *attempt, firstCall *wire.Call) (*hostConn, error) {
	ok := false
	defer func() {
		if !ok {
			tr.close()
		}
	}()
	cmd, err := o.agents.command(t)
	if err != nil {
		return nil, err
	}
	// Bound the whole bootstrap by ctx. Closing an SSH channel would only
	// send sshd a close message: the channel's opening, a read, or a write
	// waiting for window on a link gone silent waits for sshd's answer,
	// which never comes. Closing the transport (this host's own) ends them
	// at once.
	stopWatch := context.AfterFunc(ctx, tr.close)
	defer stopWatch()
	c := &hostConn{
		host:    host,
		tr:      tr,
		stderr:  &tailBuffer{max: 8 << 10},
		pending: make(map[uint32]*attempt),
		done:    make(chan struct{}),
		ended:   make(chan struct{}),
	}

	helloFrame, err := wire.Marshal(&o.hello)
	if err != nil {
		return nil, err
	}
	block := wire.AppendFrame(nil, wire.Frame{Kind: wire.KindHello, Payload: helloFrame})
	if first != nil && (o.firstWanted == nil || o.firstWanted()) && len(firstCall.Data)+len(firstCall.DataTail) <= wire.ChunkSize {
		data, err := wire.MarshalMessage(firstCall)
		if err != nil {
			return nil, err
		}
		if len(data) <= wire.ChunkSize {
			c.register(first)
			block = wire.AppendFrame(block, wire.Frame{Kind: wire.KindCall, Job: first.id, Payload: data})
		}
	}
	// The variables ssh would send (SendEnv, SetEnv), with the same
	// request, in the same flight as the exec: the session's environment,
	// which jobs inherit, is what ssh's would be where sshd accepts them.
	var env [][2]string
	for _, kv := range t.Env(os.Environ()) {
		if kv[0] != wire.EnvFrames {
			env = append(env, kv)
		}
	}
	// OpenSSH opens a session's window only once its command runs, so what
	// the master writes on stdin leaves about one round trip after the
	// exec. The same frames in an environment variable travel with the
	// exec: where sshd accepts it (Debian's and Ubuntu's AcceptEnv LANG
	// LC_*), the agent starts on them at once.
	if !o.agents.opts.StdinOnly && len(block) <= wire.MaxEnvFrames {
		env = append(env, [2]string{wire.EnvFrames, base64.StdEncoding.EncodeToString(block)})
	}
	s, err := tr.open(ctx, cmd, env)
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("open session: %w", ctx.Err())
		}
		return nil, err
	}
	c.stdin = s.stdin
	c.wg.Add(2)
	go func() {
		defer c.wg.Done()
		c.status, c.statusOK, c.sessionErr = s.wait()
		close(c.ended)
	}()
	go func() { defer c.wg.Done(); io.CopyBuffer(c.stderr, s.stderr, make([]byte, 1024)) }()

	preamble := fmt.Sprintf("%s %d %d\n", wire.MasterPreamble, wire.Version, len(block))
	if _, err := c.stdin.Write(append([]byte(preamble), block...)); err != nil {
		return nil, c.bootErr(ctx, "send preamble", err)
	}
	// Small buffers: an idle connection should cost little memory, and
	// large frames bypass them anyway.
	br := bufio.NewReaderSize(s.stdout, 8<<10)
	if err := c.awaitAgent(ctx, br, o, append([]byte(preamble), block...)); err != nil {
		var cm *controlMasterError
		if errors.As(err, &cm) {
			return nil, err
		}
		return nil, libcHint(o.agents.explain(host, t, c.stderr.String, err))
	}
	c.r = wire.NewReader(br, wire.Limits{MaxMessage: o.maxMsg})
	f, err := c.r.ReadMessage()
	if err != nil {
		return nil, c.bootErr(ctx, "read agent hello", err)
	}
	v, err := wire.Decode(f.Kind, f.Payload)
	h, isHello := v.(*wire.Hello)
	if err != nil || !isHello {
		return nil, fmt.Errorf("agent's first frame is %s, not hello (%v)", f.Kind, err)
	}
	if h.Version != wire.Version {
		return nil, fmt.Errorf("the agent speaks protocol version %d, this master %d: %w", h.Version, wire.Version, wire.ErrVersion)
	}
	c.agent = *h
	c.envStart = h.EnvFrames
	c.stopWait = o.stopWait
	o.agents.started(t, h)
	c.w = wire.NewWriterSize(c.stdin, 4<<10)
	c.alivePoke()
	if !stopWatch() {
		return nil, c.bootErr(ctx, "start agent", ctx.Err())
	}
	ok = true
	c.wg.Add(1)
	go c.readLoop()
	if o.pingIntv > 0 {
		c.wg.Add(1)
		go c.keepalive(o.pingIntv)
	}
	return c, nil
}

// awaitAgent reads the text the bootstrap prints until the agent's marker,
// uploading the agent when the script asks for it. Lines that are not the
// protocol's (a login shell's chatter) are skipped, up to a bound.
func (c *hostConn) awaitAgent(ctx context.Context, br *bufio.Reader, o connectOptions, preambleAndBlock []byte) error {
	const maxJunk = 256 << 10
	junk := 0
	// The last lines skipped, to show when the session ends before the
	// agent started: a shell that refuses commands (nologin) says why on
	// stdout.
	skipped := &tailBuffer{max: 512}
	uploaded := false  // the agent was sent: its frames follow its marker
	var release func() // of this connection's claim on a shared cache's upload
	defer func() {
		if release != nil {
			release()
		}
	}()
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			skipped.Write(line)
			junk += len(line)
			if junk > maxJunk {
				return fmt.Errorf("more than %d bytes of unexpected output before the agent started", maxJunk)
			}
			continue
		}
		if err != nil {
			skipped.Write(line)
			err = c.bootErr(ctx, "wait for agent", err)
			if out := strings.TrimSpace(printable(skipped.String())); out != "" {
				err = fmt.Errorf("%w (host stdout: %s)", err, out)
			}
			return err
		}
		s := protocolLine(strings.TrimRight(string(line), "\r\n"))
		switch {
		case strings.HasSuffix(s, wire.AgentMarker):
			if uploaded {
				// The agent just started from the upload: its first
				// frames now (see below).
				if _, err := c.stdin.Write(preambleAndBlock); err != nil {
					return c.bootErr(ctx, "send preamble", err)
				}
			}
			return nil
		case strings.Contains(s, wire.AgentMarkerPrefix):
			return fmt.Errorf("the agent on the host speaks %q, this master %q: the cached agent is of another version", s, wire.AgentMarker)
		case strings.HasPrefix(s, wire.FailPrefix):
			return fmt.Errorf("%s%s", printable(strings.TrimPrefix(s, wire.FailPrefix)), c.stderrNote())
		case strings.HasPrefix(s, notePrefix):
			o.agents.note(c.host, o.ssh.Warn, s)
		case strings.HasPrefix(s, wire.NeedPrefix):
			uname, cache := parseNeed(strings.TrimPrefix(s, wire.NeedPrefix))
			bin, err := o.agents.forUname(uname)
			if err != nil {
				io.WriteString(c.stdin, "none none\n")
				return err
			}
			if cache != "" && release == nil {
				wait, rel := claimUpload(cache, bin.hash)
				release = rel
				waitStart := time.Now()
				if wait != nil && waitShared(ctx, wait) {
					// Another connection has sent this agent into the same
					// cache: the host looks again (and asks once more,
					// without the token, if it is not there).
					if _, err := io.WriteString(c.stdin, "again "+bin.hash+"\n"); err != nil {
						return c.bootErr(ctx, "upload agent", err)
					}
					if _, err := c.stdin.Write(preambleAndBlock); err != nil {
						return c.bootErr(ctx, "upload agent", err)
					}
					continue
				}
				if ctx.Err() != nil {
					return c.bootErr(ctx, "wait for the upload to a host sharing the agent cache", ctx.Err())
				}
				if wait != nil {
					fmt.Fprintf(o.warnTo(), "toworker: %s: another connection's upload of the agent into the agent cache this host shares (.id %s) has not ended after %v; uploading it from this connection\n",
						c.host, cache, time.Since(waitStart).Round(time.Millisecond))
				}
			}
			msg := fmt.Sprintf("%d %s\n", len(bin.gz), bin.hash)
			if _, err := io.WriteString(c.stdin, msg); err != nil {
				return c.bootErr(ctx, "upload agent", err)
			}
			if _, err := c.stdin.Write(bin.gz); err != nil {
				return c.bootErr(ctx, "upload agent", err)
			}
			// The script discarded the first frames; the freshly started
			// agent reads them anew, once it says it runs: sent now, they
			// could go into the head -c that reads the upload, which
			// outside GNU coreutils (busybox, the BSDs) reads ahead.
			uploaded = true
			if o.uploaded != nil {
				o.uploaded(len(bin.gz))
			}
		default:
			skipped.Write(line)
			junk += len(line)
			if junk > maxJunk {
				return fmt.Errorf("more than %d bytes of unexpected output before the agent started", maxJunk)
			}
		}
	}
}

// bootErr describes a bootstrap step that failed, with what the host wrote
// on stderr.
func (c *hostConn) bootErr(ctx context.Context, step string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%s: %w", step, ctx.Err())
	}
	if errors.Is(err, io.EOF) || errors.Is(err, os.ErrClosed) || errors.Is(err, syscall.EPIPE) {
		err = errors.New("the session ended before the agent started")
		if st, ok, serr := c.waitEnded(); serr != nil {
			return serr // a ControlMaster that did not run it
		} else if ok {
			err = fmt.Errorf("the bootstrap exited with status %d", st)
		}
	}
	return fmt.Errorf("%s: %w%s", step, err, c.stderrNote())
}

// waitEnded waits a little for the session's end, and returns what
// session.wait said of it.
func (c *hostConn) waitEnded() (status int, ok bool, err error) {
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case <-c.ended:
		return c.status, c.statusOK, c.sessionErr
	case <-t.C:
		return 0, false, nil
	}
}

func (c *hostConn) stderrNote() string {
	if s := strings.TrimSpace(printable(c.stderr.String())); s != "" {
		return " (host stderr: " + s + ")"
	}
	return ""
}

// printable replaces the control characters of what a host wrote, but tab
// and newline, with U+FFFD: an error message is printed on the user's
// terminal, where an escape sequence from the host has no business.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if (r < 0x20 && r != '\t' && r != '\n') || (r >= 0x7f && r < 0xa0) {
			return utf8.RuneError
		}
		return r
	}, s)
}

// readLoop is the only reader of the connection. When it ends, every pending
// attempt fails with the connection's error.
func (c *hostConn) readLoop() {
	defer c.wg.Done()
	var err error
	for {
		var f wire.Frame
		f, err = c.r.ReadMessage()
		if err != nil {
			break
		}
		c.alivePoke()
		if err = c.dispatch(f); err != nil {
			break
		}
	}
	c.mu.Lock()
	if c.closing {
		err = errConnClosed
	} else if err == io.EOF {
		err = fmt.Errorf("connection lost: the agent's stream ended%s", c.stderrNote())
	} else {
		err = fmt.Errorf("connection lost: %w", err)
	}
	if c.err == nil {
		c.err = err
	}
	err = c.err // an abort (keepalive) may have said why first
	pend := c.pending
	c.pending = map[uint32]*attempt{}
	c.mu.Unlock()
	c.tr.close()
	for _, a := range pend {
		a.fail(&FailureError{Host: c.host, Desc: a.run.job.Desc, Op: "run", Err: err})
	}
	close(c.done)
}

var errConnClosed = errors.New("connection closed by the master")

// protocolLine returns the bootstrap's own line at the end of s: a login
// shell's start-up files may print something that does not end its line
// (a printf, a terminal title, a progress bar's carriage returns), and
// the script's line then follows it on the same line.
func protocolLine(s string) string {
	for _, p := range [...]string{wire.NeedPrefix, wire.FailPrefix, notePrefix} {
		if i := strings.LastIndex(s, p); i > 0 {
			return s[i:]
		}
	}
	return s
}

// dispatch hands one message to its attempt.
func (c *hostConn) dispatch(f wire.Frame) error {
	if f.Job == 0 {
		switch f.Kind {
		case wire.KindPong:
			c.mu.Lock()
			c.alivePoke()
			c.mu.Unlock()
		case wire.KindPing:
			return c.w.WriteFrame(wire.Frame{Kind: wire.KindPong, Payload: f.Payload})
		case wire.KindBye:
			var bye wire.Bye
			wire.Unmarshal(f.Payload, &bye)
			return fmt.Errorf("the agent said bye: %s", printable(bye.Reason))
		}
		return nil
	}
	c.mu.Lock()
	a := c.pending[f.Job]
	c.mu.Unlock()
	if a == nil {
		return nil // a job the master gave up on (timed out); drop its frames
	}
	switch f.Kind {
	case wire.KindStdout, wire.KindStderr:
		a.output(f.Kind, f.Payload)
	case wire.KindCallback:
		v, err := wire.Decode(f.Kind, f.Payload)
		if err != nil {
			return err
		}
		a.callback(v.(*wire.CallbackRequest))
	case wire.KindLog:
		v, err := wire.Decode(f.Kind, f.Payload)
		if err != nil {
			return err
		}
		a.log(v.(*wire.LogRecord))
	case wire.KindResult:
		v, err := wire.Decode(f.Kind, f.Payload)
		if err != nil {
			return err // the job is still pending: it fails with the connection
		}
		c.mu.Lock()
		delete(c.pending, f.Job)
		c.mu.Unlock()
		a.result(v.(*wire.Result))
	default:
		return fmt.Errorf("unexpected %s frame from the agent", f.Kind)
	}
	return nil
}

// start registers an attempt and sends its call. A call split into frames
// stops at the next frame once stop (when not nil) is closed, with
// wire.ErrStopped: the attempt then stays registered if the boss has seen
// part of it (a cancel makes the boss drop it and answer), and is forgotten
// if not.
func (c *hostConn) start(a *attempt, call *wire.Call, stop <-chan struct{}) error {
	head, err := wire.Marshal(call) // the data follows it, not copied
	if err != nil {
		return err
	}
	if err := c.register(a); err != nil {
		return err
	}
	// With other calls to this host in flight (pipelined load), this one
	// waits in the writer's buffer while its goroutine yields once, so
	// that the calls other goroutines are about to send leave with it, in
	// one SSH packet and one TCP write. A lone call is written at once.
	others := a.hostInFlight != nil && a.hostInFlight.Load() > 1
	if others {
		c.w.Hold()
	}
	started := true
	if stop != nil {
		started, err = c.w.WriteMessageStop(stop, wire.KindCall, a.id, head, call.Data, call.DataTail)
	} else {
		err = c.w.WriteMessage(wire.KindCall, a.id, head, call.Data, call.DataTail)
	}
	if others {
		runtime.Gosched()
		if rerr := c.w.Release(); err == nil {
			err = rerr
		}
	}
	if started && errors.Is(err, wire.ErrStopped) {
		return err // still registered: the boss answers the cancel
	}
	if err != nil {
		c.mu.Lock()
		delete(c.pending, a.id)
		switch {
		case errors.Is(err, wire.ErrStopped):
			err = errNotSent
		case c.err != nil:
			err = c.err // why the connection ended, not the write's EOF
		}
		c.mu.Unlock()
		return err
	}
	return nil
}

// errNotSent: a call stopped before any of it was written; the boss knows
// nothing of it.
var errNotSent = fmt.Errorf("%w before its first frame", wire.ErrStopped)

// register gives a its job id on c and routes c's frames for it to a.
func (c *hostConn) register(a *attempt) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return c.err
	}
	c.nextID++
	if c.nextID == 0 {
		c.nextID = 1
	}
	a.id = c.nextID
	a.conn = c
	c.pending[a.id] = a
	return nil
}

// cancel asks the boss to kill job id's worker and process group. The
// attempt stays registered so the boss's result is absorbed.
func (c *hostConn) cancel(id uint32) {
	b, _ := wire.Marshal(&wire.Cancel{})
	c.w.WriteMessage(wire.KindCancel, id, b)
}

// alive reports whether the connection still works.
func (c *hostConn) alive() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err == nil
}

// Err returns why the connection ended, or nil.
func (c *hostConn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// keepalive pings the boss; both sides treat three silent intervals as a
// dead connection (a half-open TCP connection gives no other sign). Any
// frame counts as a sign of life, and time the reader spends waiting for a
// slow job's handler (back-pressure, not silence) does not count. Pings are
// written from a goroutine of their own, at most one at a time, so that a
// write stuck behind a big message on a dead link cannot keep the check
// from running; abort then closes the client, which ends the stuck write.
func (c *hostConn) keepalive(every time.Duration) {
	defer c.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	var n uint64
	var pinging atomic.Bool
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
		}
		silent := time.Since(time.Unix(0, c.lastRecv.Load()))
		if silent > 3*every && !c.readerWaiting.Load() {
			c.abort(fmt.Errorf("no answer to keepalives for %v", silent.Round(time.Millisecond)))
			return
		}
		// Pings go on while the reader waits: the boss watches for the
		// master's silence too.
		if !pinging.CompareAndSwap(false, true) {
			continue
		}
		n++
		b, _ := wire.Marshal(&wire.Ping{N: n})
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			defer pinging.Store(false)
			c.w.WriteFrame(wire.Frame{Kind: wire.KindPing, Payload: b})
		}()
	}
}

// alivePoke records a sign of life from the agent.
func (c *hostConn) alivePoke() { c.lastRecv.Store(time.Now().UnixNano()) }

// killGrace is how much longer than StopWait a killed pool waits for a
// connection to close before closing it under whatever is stuck on it.
const killGrace = time.Second

// closeOnKill bounds what a kill of the pool (ctx ending) waits for this
// connection. A job writing its input into a link gone silent blocks in
// the write (the SSH window never reopens), and never returns to see the
// kill; keepalive would notice only after three intervals, or never when
// it is off. Past the time the pool gives an agent to stop, the connection
// is closed under it, which ends the write.
func (c *hostConn) closeOnKill(ctx context.Context) {
	c.stopKillGuard = context.AfterFunc(ctx, func() {
		t := time.NewTimer(max(c.stopWait, 0) + killGrace)
		defer t.Stop()
		select {
		case <-c.done:
		case <-t.C:
			c.abort(fmt.Errorf("%w, and the connection was still busy %v later", ErrClosed, max(c.stopWait, 0)+killGrace))
		}
	})
}

// abort ends the connection with err.
func (c *hostConn) abort(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = fmt.Errorf("connection lost: %w", err)
	}
	c.mu.Unlock()
	c.tr.close()
}

// close says bye to the boss (which kills its workers and exits) and waits
// for the reader. It is idempotent.
func (c *hostConn) close() {
	c.mu.Lock()
	already := c.closing
	c.closing = true
	c.mu.Unlock()
	if !already {
		b, _ := wire.Marshal(&wire.Bye{Reason: "master closing"})
		c.w.WriteMessage(wire.KindBye, 0, b)
		c.w.Close(c.stdin)
		if c.stopWait > 0 {
			t := time.NewTimer(c.stopWait)
			select {
			case <-c.done:
			case <-t.C:
			}
			t.Stop()
		}
		c.tr.close()
	}
	c.wg.Wait()
	if c.stopKillGuard != nil {
		c.stopKillGuard()
	}
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(bytes.ToValidUTF8(t.b, nil))
}
