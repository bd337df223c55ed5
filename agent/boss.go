package agent

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/toworker/toworker/internal/rawio"
	"github.com/toworker/toworker/internal/wire"
)

// Bounds on collecting a dead worker's crash output.
const (
	crashGrace = time.Second
	crashMax   = 64 << 10
)

// boss is the long-lived agent process of one master connection. It reads
// frames from the master on stdin, runs each job in a worker process, and
// writes the workers' frames and the jobs' output back on its stdout.
type boss struct {
	out *wire.Writer // to the master; safe for concurrent use
	exe string       // this binary's path, each worker's argv[0]
	// runExe is what is executed to start a worker: the running binary
	// itself where the system can name it (see runningExe).
	runExe string
	hello  wire.Hello // the master's; static after start
	diag   io.Writer  // diagnostics: the session's stderr
	// The session's stdin and the frame stream, non-blocking so that
	// closing them ends a read or write in progress: when the master has
	// gone silent (a half-open connection) nothing else would. Static after
	// start.
	stdin, framesOut *os.File

	mu      sync.Mutex // guards the fields below
	workers map[*bworker]struct{}
	idle    []*bworker
	jobs    map[uint32]*bjob
	// queue holds, in order, calls that wait because hello.MaxWorkers
	// jobs run and no worker can take them: worker calls and, with
	// MaxWorkers, Inline calls.
	queue  []*bjob
	inline map[uint32]*inlineJob // running Inline calls, counted against hello.MaxWorkers
	// inlineWG counts Inline calls' goroutines: waited for at exit, but
	// only so long, since a function may ignore its cancelled context.
	inlineWG sync.WaitGroup
	stopping bool

	wg       sync.WaitGroup // every goroutine the boss starts
	lastRecv time.Time      // guarded by mu: last frame from the master
	// ended is why the boss stopped on its own (a signal, the master's
	// silence): serveBoss returns it instead of the read error that
	// closing stdin caused. Guarded by mu.
	ended error
}

// bworker is the boss's handle on one worker process.
type bworker struct {
	cmd        *exec.Cmd
	pid        int
	conn       *net.UnixConn
	io         io.ReadWriter // conn, read and written as rawIO does
	sendMu     sync.Mutex    // serialises writes to conn; guards sendBuf and sendClosed
	sendBuf    []byte
	sendClosed bool
	// The read ends of the worker's stdout and stderr pipes. The worker
	// reads them; the boss only drains what is left when the worker dies
	// during a job.
	pipes [2]*os.File
	// guarded by boss.mu:
	job *bjob // the job it runs
	// queued are calls written to it while it runs job (pipelining), which
	// it starts one after another as it sends job's result and theirs.
	// None has started before the result of the one ahead of it, since a
	// worker runs its calls in the order of its socket: if the worker dies
	// first, they go to another.
	queued      []*bjob
	queuedBytes int   // their frames' payloads
	gate        *gate // the start gate shared with the worker; nil without
	jobs        int
	retired     bool

	crash     []byte        // the runtime's crash output, bounded
	crashDone chan struct{} // closed when the crash pipe reaches EOF
	readDone  chan struct{} // closed when the frame reader returns
}

type sendItem struct {
	frame wire.Frame
}

// bjob is one job the boss has handed to a worker, or keeps queued for one.
type bjob struct {
	id uint32
	w  *bworker // guarded by boss.mu: nil while in boss.queue
	// held keeps copies of the call's frames until a worker starts it, so
	// that a call queued on a worker that dies can go to another; complete
	// says its last frame has arrived (the master may stop sending a large
	// call when its job ends first). Guarded by boss.mu.
	held     []wire.Frame
	complete bool
	// inline is the Inline function of a call that waits in boss.queue
	// for a slot, to run in the boss: held has its one frame, and call
	// is decoded from it. Nil for calls that workers run.
	inline   *entry
	call     *wire.Call
	canceled bool // guarded by boss.mu
	resulted bool // guarded by boss.mu: the worker began sending the result
	// stderr watches the job's stderr, forwarded or drained, for a fatal
	// error's first lines, which only appear there (see crashScan). Owned
	// by the worker's read loop, then by reap once that loop has returned.
	stderr crashScan
}

// serveBoss runs the boss until the master goes away.
func serveBoss() error {
	// The boss routes frames and waits on processes: one processor is all
	// it uses, and with more the runtime keeps idle threads spinning for
	// work after each hand-off, on CPUs the jobs need (pipelined no-op
	// calls on 2 cores: about 10 % more calls/s with one). The bootstrap
	// starts it so already (see wire.EnvGOMAXPROCS).
	restoreGOMAXPROCS()
	runtime.GOMAXPROCS(1)
	// Jobs run in "/" unless they say otherwise (remote.Job.Chdir), the
	// same on every host and for every user; nor does a warm agent keep
	// the login directory, perhaps a mount, busy.
	if err := os.Chdir("/"); err != nil {
		return fmt.Errorf("boss: chdir /: %w", err)
	}
	// Frames go out on a private copy of fd 1; fd 1 itself is pointed at
	// stderr so that nothing else in this process can write into the
	// frame stream.
	outFD, err := unix.Dup(1)
	if err != nil {
		return fmt.Errorf("boss: dup stdout: %w", err)
	}
	syscall.CloseOnExec(outFD)
	if err := unix.Dup2(2, 1); err != nil {
		return fmt.Errorf("boss: redirect stdout: %w", err)
	}
	syscall.SetNonblock(outFD, true)
	framesOut := os.NewFile(uintptr(outFD), "frames")
	syscall.SetNonblock(0, true)
	stdin := os.NewFile(0, "stdin")
	first := envFrames()
	in := &masterInput{in: bufio.NewReaderSize(rawio.New(stdin), 64<<10), skip: first != nil}
	var src io.Reader = in
	if first != nil {
		src = io.MultiReader(bytes.NewReader(first), in)
	}

	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("boss: cannot find own executable to start workers: %w", err)
	}
	if _, err := io.WriteString(framesOut, wire.AgentMarker+"\n"); err != nil {
		return err
	}
	b := &boss{
		out:       wire.NewWriter(rawio.New(framesOut)),
		stdin:     stdin,
		framesOut: framesOut,
		exe:       exe,
		runExe:    runningExe(exe),
		diag:      os.Stderr,
		workers:   make(map[*bworker]struct{}),
		jobs:      make(map[uint32]*bjob),
		inline:    make(map[uint32]*inlineJob),
		lastRecv:  time.Now(),
	}
	if err := b.out.WriteValue(wire.KindHello, 0, &wire.Hello{
		Version: wire.Version, Role: "boss", OS: goos(), Arch: goarch(), PID: os.Getpid(), Hash: selfHash(),
		EnvFrames: first != nil,
	}); err != nil {
		return err
	}
	r := wire.NewReader(src, wire.Limits{})
	f, err := r.ReadFrame()
	if err != nil {
		return fmt.Errorf("boss: read master hello: %w", err)
	}
	v, err := wire.Decode(f.Kind, f.Payload)
	h, ok := v.(*wire.Hello)
	if err != nil || !ok {
		return fmt.Errorf("boss: first frame is %s, not hello", f.Kind)
	}
	if h.Version != wire.Version {
		b.out.WriteValue(wire.KindBye, 0, &wire.Bye{Reason: fmt.Sprintf("agent speaks protocol %d, master %d", wire.Version, h.Version)})
		return fmt.Errorf("boss: master protocol %d, agent %d: update one of them", h.Version, wire.Version)
	}
	b.hello = *h

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	stop := make(chan struct{})
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		b.watch(sigs, stop)
	}()

	for range b.hello.MinWarm {
		b.mu.Lock()
		if w, err := b.spawnLocked(); err == nil {
			b.idle = append(b.idle, w)
		}
		b.mu.Unlock()
	}
	err = b.readLoop(r)
	if ended := b.endedErr(); ended != nil {
		err = ended // the read ended because the boss closed stdin
	}
	close(stop)
	b.shutdown()
	b.wg.Wait()
	inlineDone := make(chan struct{})
	go func() { b.inlineWG.Wait(); close(inlineDone) }()
	select {
	case <-inlineDone:
	case <-time.After(2 * time.Second):
	}
	if err == io.EOF {
		return nil
	}
	return err
}

// watch ends the boss when a signal arrives or the master has been silent
// for three ping intervals (a half-open connection). It closes stdin to stop
// the read loop, and the frame stream to free writers blocked on it.
func (b *boss) watch(sigs <-chan os.Signal, stop <-chan struct{}) {
	interval := time.Duration(b.hello.PingSeconds) * time.Second
	var tick <-chan time.Time
	if interval > 0 {
		t := time.NewTicker(interval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-stop:
			return
		case sig := <-sigs:
			// The host is shutting down, or someone stopped the agent:
			// its jobs are killed, and the master is told why, so that
			// its failure says so instead of "the stream ended".
			b.stop(fmt.Errorf("stopped by %s", signalName(sig)))
			b.shutdown()
			b.bye(fmt.Sprintf("stopped by %s on the host, killing its jobs", signalName(sig)))
			b.stdin.Close()
			b.framesOut.Close()
			return
		case <-tick:
			b.mu.Lock()
			silent := time.Since(b.lastRecv)
			b.mu.Unlock()
			if silent > 3*interval {
				b.stop(fmt.Errorf("no word from the master for %v; stopping", silent.Round(time.Second)))
				b.shutdown()
				b.stdin.Close()
				b.framesOut.Close()
				return
			}
		}
	}
}

// byeWait bounds how long a boss stopping on its own waits to tell the
// master why: a master that stopped reading must not keep it.
const byeWait = time.Second

// stop records why the boss is stopping on its own; the first reason
// stands.
func (b *boss) stop(why error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ended == nil {
		b.ended = why
	}
}

func (b *boss) endedErr() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ended
}

// bye tells the master why the boss stops, waiting at most byeWait for a
// frame stream that may be stuck; closing the stream then frees the write.
func (b *boss) bye(reason string) {
	done := make(chan struct{})
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		defer close(done)
		b.out.WriteValue(wire.KindBye, 0, &wire.Bye{Reason: reason})
	}()
	t := time.NewTimer(byeWait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

// signalName names sig as kill(1) does: SIGTERM.
func signalName(sig os.Signal) string {
	if s, ok := sig.(syscall.Signal); ok {
		if name := unix.SignalName(s); name != "" {
			return name
		}
	}
	return sig.String()
}

// readLoop routes the master's frames until the stream ends. A frame
// forwarded to a worker is written before the next is read, so its buffer
// is reused; one an Inline job keeps is not.
func (b *boss) readLoop(r *wire.Reader) error {
	var buf []byte
	// Workers with calls kept back while more frames were buffered: they
	// are written before any read that could block.
	var batch []*bworker
	flush := func() {
		for i, w := range batch {
			w.flush()
			batch[i] = nil
		}
		batch = batch[:0]
	}
	defer flush()
	for {
		if len(batch) > 0 && !r.FrameBuffered() {
			flush()
		}
		f, err := r.ReadFrameReuse(buf)
		if err != nil {
			return err
		}
		buf = f.Payload[:0]
		b.mu.Lock()
		b.lastRecv = time.Now()
		b.mu.Unlock()
		switch f.Kind {
		case wire.KindCall:
			var bp *[]*bworker
			if r.FrameBuffered() {
				bp = &batch
			}
			kept, err := b.routeCall(f, bp)
			if err != nil {
				b.fail(f.Job, &wire.Error{Kind: wire.ErrKindAgent, Message: err.Error()})
			}
			if kept {
				buf = nil
			}
		case wire.KindCallbackReply:
			if ij := b.inlineJob(f.Job); ij != nil {
				buf = nil
				if err := ij.deliver(f); err != nil {
					return fmt.Errorf("boss: callback reply for job %d: %w", f.Job, err)
				}
				continue
			}
			b.mu.Lock()
			j := b.jobs[f.Job]
			b.mu.Unlock()
			if j != nil {
				j.w.send(sendItem{frame: f})
			}
		case wire.KindCancel:
			b.cancel(f.Job)
		case wire.KindPing:
			b.out.WriteFrame(wire.Frame{Kind: wire.KindPong, Payload: f.Payload})
		case wire.KindBye:
			return nil
		case wire.KindPong, wire.KindHello:
		default:
			return fmt.Errorf("boss: unexpected %s frame from master", f.Kind)
		}
	}
}

// drainOutput forwards what is left in a dead worker's output pipes as job
// j's output.
func (b *boss) drainOutput(w *bworker, j *bjob) {
	buf := make([]byte, 32<<10)
	for i, f := range w.pipes {
		fd := int(f.Fd())
		syscall.SetNonblock(fd, true)
		for range 1024 { // at most 32 MiB: the pipe holds far less
			n, err := syscall.Read(fd, buf)
			if n <= 0 || err != nil {
				break
			}
			b.out.WriteFrame(wire.Frame{Kind: streamKinds[i], Job: j.id, Payload: buf[:n]})
			if streamKinds[i] == wire.KindStderr {
				j.stderr.write(buf[:n])
			}
		}
	}
}

// spawnLocked starts a worker process. b.mu is held.
func (b *boss) spawnLocked() (*bworker, error) {
	fds, err := cloexecSocketpair()
	if err != nil {
		return nil, fmt.Errorf("start worker: socketpair: %w", err)
	}
	mine := os.NewFile(uintptr(fds[0]), "worker")
	theirs := os.NewFile(uintptr(fds[1]), "boss")
	crashR, crashW, err := os.Pipe()
	if err != nil {
		mine.Close()
		theirs.Close()
		return nil, fmt.Errorf("start worker: %w", err)
	}
	var pr, pw [2]*os.File
	for i := range pr {
		if pr[i], pw[i], err = os.Pipe(); err != nil {
			mine.Close()
			theirs.Close()
			crashR.Close()
			crashW.Close()
			closeAll(pr[:i])
			closeAll(pw[:i])
			return nil, fmt.Errorf("start worker: %w", err)
		}
	}
	cmd := exec.Command(b.runExe, agentFlag, "worker")
	cmd.Args[0] = b.exe // what ps shows
	cmd.Stdout, cmd.Stderr = pw[0], pw[1]
	cmd.ExtraFiles = []*os.File{theirs, crashW, pr[0], pr[1]} // fds 3, 4, 5, 6
	// The start gate, fd 7 (see startgate.go). Without one (no shared
	// memory), a call cancelled while queued on the worker is killed with
	// the worker as it starts.
	var g *gate
	if gf, gerr := newGateFile(); gerr == nil {
		if g, gerr = mapGate(gf); gerr == nil {
			cmd.ExtraFiles = append(cmd.ExtraFiles, gf)
		}
		defer gf.Close()
	}
	cmd.SysProcAttr = workerSysProcAttr()
	err = cmd.Start()
	theirs.Close()
	crashW.Close()
	closeAll(pw[:])
	if err != nil {
		g.unmap()
		g = nil
	}
	if err != nil {
		mine.Close()
		crashR.Close()
		closeAll(pr[:])
		return nil, fmt.Errorf("start worker: %w", err)
	}
	nc, err := net.FileConn(mine)
	mine.Close()
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		crashR.Close()
		closeAll(pr[:])
		g.unmap()
		return nil, fmt.Errorf("start worker: %w", err)
	}
	w := &bworker{
		cmd: cmd, pid: cmd.Process.Pid, conn: nc.(*net.UnixConn), io: rawio.New(nc.(*net.UnixConn)), pipes: pr, gate: g,
		crashDone: make(chan struct{}),
		readDone:  make(chan struct{}),
	}
	b.workers[w] = struct{}{}
	hello, _ := wire.Marshal(&wire.Hello{Version: wire.Version, Role: "boss", Init: b.hello.Init, Host: b.hello.Host})
	w.send(sendItem{frame: wire.Frame{Kind: wire.KindHello, Payload: hello}})
	b.wg.Add(3)
	go func() { defer b.wg.Done(); w.readCrash(crashR) }()
	go func() { defer b.wg.Done(); b.workerReadLoop(w) }()
	go func() { defer b.wg.Done(); b.reap(w) }()
	return w, nil
}

// send writes a frame to the worker, from the caller's goroutine: the
// master's reader, usually, so a call reaches its worker without a hand-off.
// A write blocks only while the worker's socket buffer is full, which is
// back-pressure the master's stream should feel. Frames for a retired worker
// are dropped.
func (w *bworker) send(it sendItem) {
	w.sendMu.Lock()
	defer w.sendMu.Unlock()
	w.sendLocked(it)
}

// sendLocked is send with w.sendMu held. Frames that deferLocked kept
// back go first, in the same write.
func (w *bworker) sendLocked(it sendItem) {
	if w.sendClosed {
		return
	}
	if p := it.frame.Payload; len(p) > 4<<10 {
		w.flushLocked()
		if w.sendClosed {
			return
		}
		// Header and payload in one writev, the payload not copied.
		bufs := net.Buffers{wire.AppendHeader(w.sendBuf[:0], it.frame), p}
		if _, err := bufs.WriteTo(w.conn); err != nil {
			w.sendClosed = true
		}
		return
	}
	w.sendBuf = wire.AppendFrame(w.sendBuf, it.frame)
	w.flushLocked()
}

// deferLocked keeps a small frame back, to be written with the next ones
// (flushLocked, or the next sendLocked): the master's reader does so while
// more of the master's frames are buffered, so that calls for a worker that
// arrive together reach it in one write. w.sendMu is held.
func (w *bworker) deferLocked(f wire.Frame) {
	if !w.sendClosed {
		w.sendBuf = wire.AppendFrame(w.sendBuf, f)
	}
}

// flushLocked writes the frames kept back. w.sendMu is held.
func (w *bworker) flushLocked() {
	if len(w.sendBuf) > 0 && !w.sendClosed {
		if _, err := w.io.Write(w.sendBuf); err != nil {
			w.sendClosed = true
		}
	}
	w.sendBuf = w.sendBuf[:0]
}

// flush writes the frames kept back.
func (w *bworker) flush() {
	w.sendMu.Lock()
	defer w.sendMu.Unlock()
	w.flushLocked()
}

// retire stops sending to the worker: closing our end makes its reader see
// end of file, and the worker exits.
func (w *bworker) retire() {
	w.sendMu.Lock()
	defer w.sendMu.Unlock()
	w.flushLocked()
	if !w.sendClosed {
		w.sendClosed = true
		w.conn.CloseWrite()
	}
}

func (w *bworker) readCrash(r *os.File) {
	defer close(w.crashDone)
	defer r.Close()
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		if len(w.crash) < crashMax {
			w.crash = append(w.crash, buf[:min(n, crashMax-len(w.crash))]...)
		}
		if err != nil {
			return
		}
	}
}

// workerReadLoop forwards the worker's frames to the master, in the order
// the worker sent them: a job's output before its result.
func (b *boss) workerReadLoop(w *bworker) {
	defer close(w.readDone)
	r := wire.NewReader(w.io, wire.Limits{})
	if _, err := r.ReadFrame(); err != nil { // the worker's hello
		return
	}
	var buf []byte // each frame is written out before the next is read
	// While the next frame is already buffered, the frame stream is held
	// (not flushed), so that results that come together leave in one write
	// and wake sshd once. It is let go before any read that could block.
	holding := false
	defer func() {
		if holding {
			b.out.Release()
		}
	}()
	for {
		if holding && !r.FrameBuffered() {
			b.out.Release()
			holding = false
		}
		f, err := r.ReadFrameReuse(buf)
		if err != nil {
			return
		}
		buf = f.Payload[:0]
		b.mu.Lock()
		j := w.job
		if j == nil || j.id != f.Job {
			b.mu.Unlock()
			continue // a frame for a job the boss already closed
		}
		if f.Kind == wire.KindResult {
			j.resulted = true
		}
		b.mu.Unlock()
		if f.Kind == wire.KindStderr {
			j.stderr.write(f.Payload)
		}
		if f.Kind == wire.KindResult && !f.More {
			// The worker is free before the master learns the result, so
			// that the master's next call finds it idle.
			b.finish(w, j)
		}
		if !holding && r.FrameBuffered() {
			b.out.Hold()
			holding = true
		}
		b.out.WriteFrame(f)
	}
}

// finish closes a job whose result has been forwarded and makes its worker
// idle, or retires it after MaxJobsPerWorker jobs. A call queued on the
// worker starts now; if it was cancelled meanwhile, the worker is killed
// with it, as a running job's is.
func (b *boss) finish(w *bworker, j *bjob) {
	b.mu.Lock()
	delete(b.jobs, j.id)
	w.job = nil
	if w.gate != nil && j.canceled {
		w.gate.clear(j.id)
	}
	if b.stopping || w.retired {
		b.mu.Unlock()
		return
	}
	kill := false
	if len(w.queued) > 0 {
		nx := w.queued[0]
		w.queued[0] = nil
		w.queued = w.queued[1:]
		w.queuedBytes -= nx.size()
		w.job = nx
		nx.held = nil
		kill = nx.canceled && w.gate == nil // with a gate, the worker skips it
	} else if max := b.hello.MaxJobsPerWorker; max > 0 && w.jobs >= max {
		w.retired = true
		w.retire()
	} else {
		b.idle = append(b.idle, w)
	}
	ds := b.dispatchLocked()
	b.mu.Unlock()
	b.deliver(ds)
	if kill {
		syscall.Kill(-w.pid, syscall.SIGKILL)
	}
}

// reap waits for a worker to exit, kills what is left of its process group,
// and fails the job it was running, if any.
func (b *boss) reap(w *bworker) {
	// Wait without reaping, so the group id cannot be reused before the
	// group is killed.
	waitNoReap(w.pid)
	syscall.Kill(-w.pid, syscall.SIGKILL)
	b.mu.Lock()
	delete(b.workers, w)
	// MinWarm workers stay alive, busy or idle (AnyEvent::Task's
	// min_workers): replace one that was recycled or died.
	if !b.stopping && len(b.workers) < b.hello.MinWarm {
		if nw, err := b.spawnLocked(); err == nil {
			b.idle = append(b.idle, nw)
		}
	}
	b.mu.Unlock()
	state, _ := w.cmd.Process.Wait()
	select {
	case <-w.readDone:
	case <-time.After(crashGrace):
		w.conn.Close()
		<-w.readDone
	}
	b.mu.Lock()
	for i, iw := range b.idle {
		if iw == w {
			b.idle = append(b.idle[:i], b.idle[i+1:]...)
			break
		}
	}
	j := w.job
	w.job = nil
	if !w.retired {
		w.retired = true
		w.retire()
	}
	w.gate.unmap() // the worker is gone; cancel finds no gate under b.mu
	w.gate = nil
	canceled := j != nil && j.canceled
	if j != nil {
		delete(b.jobs, j.id)
	}
	// The calls queued behind j never started: they go first, in order, to
	// other workers, or are reported cancelled if they were.
	var notStarted []uint32
	if !b.stopping {
		var back []*bjob
		for _, q := range w.queued {
			q.w = nil
			if q.canceled {
				delete(b.jobs, q.id)
				notStarted = append(notStarted, q.id)
			} else {
				back = append(back, q)
			}
		}
		w.queued, w.queuedBytes = nil, 0
		b.queue = slices.Insert(b.queue, 0, back...)
	}
	ds := b.dispatchLocked()
	stopping := b.stopping
	b.mu.Unlock()
	b.deliver(ds)
	for _, id := range notStarted {
		b.notStarted(id)
	}
	if j == nil || stopping {
		closeAll(w.pipes[:])
		return
	}
	b.drainOutput(w, j)
	closeAll(w.pipes[:])
	select {
	case <-w.crashDone:
	case <-time.After(crashGrace):
	}
	werr := exitError(state, w.crash, j.stderr.header)
	if canceled {
		werr.Kind = wire.ErrKindCanceled
		werr.Message = "job cancelled; its worker and process group were killed"
	}
	b.out.WriteFrame(wire.Frame{Kind: wire.KindAbort, Job: j.id})
	b.out.WriteValue(wire.KindResult, j.id, &wire.Result{Err: werr, WorkerPID: w.pid, WorkerJobs: w.jobs})
}

func closeAll(fs []*os.File) {
	for _, f := range fs {
		if f != nil {
			f.Close()
		}
	}
}

// cancel kills the worker running job id and its whole process group. The
// reaper reports the job as cancelled.
func (b *boss) cancel(id uint32) {
	if ij := b.inlineJob(id); ij != nil {
		ij.cancel() // an inline function can only be asked to stop
		return
	}
	b.mu.Lock()
	j := b.jobs[id]
	if j == nil || j.resulted {
		b.mu.Unlock()
		return
	}
	j.canceled = true
	if j.w == nil {
		// Waiting in the boss's queue: it never starts.
		b.queue = slices.DeleteFunc(b.queue, func(q *bjob) bool { return q == j })
		delete(b.jobs, id)
		b.mu.Unlock()
		b.notStarted(id)
		return
	}
	if !j.complete && j.w.job == j {
		// The master stopped sending the call (its job ended while its
		// input was on the way): the worker reads a message that never
		// ends. The call has not started; the worker goes, and its
		// partial message with it.
		pid := j.w.pid
		b.mu.Unlock()
		syscall.Kill(-pid, syscall.SIGKILL)
		return
	}
	if g := j.w.gate; g != nil {
		if running, ok := g.cancel(id); ok {
			pid := j.w.pid
			b.mu.Unlock()
			// Not running: the worker skips it, and reports so, or it has
			// returned already.
			if running {
				syscall.Kill(-pid, syscall.SIGKILL)
			}
			return
		}
	}
	if j.w.job != j {
		// Queued on a busy worker with no gate: killed as it starts (see
		// finish).
		b.mu.Unlock()
		return
	}
	pid := j.w.pid
	b.mu.Unlock()
	// The worker is not reaped until reap has killed its group, so pid
	// still names this worker's group here.
	syscall.Kill(-pid, syscall.SIGKILL)
}

// notStarted reports a job cancelled before any worker started it.
func (b *boss) notStarted(id uint32) {
	b.out.WriteValue(wire.KindResult, id, &wire.Result{Err: &wire.Error{Kind: wire.ErrKindCanceled,
		Message: "job cancelled before it started"}})
}

// fail reports a job the boss could not start.
func (b *boss) fail(id uint32, e *wire.Error) {
	b.out.WriteValue(wire.KindResult, id, &wire.Result{Err: e})
}

// shutdown kills every worker's process group. It is idempotent.
func (b *boss) shutdown() {
	b.mu.Lock()
	b.stopping = true
	for _, ij := range b.inline {
		ij.cancel()
	}
	ws := make([]*bworker, 0, len(b.workers))
	for w := range b.workers {
		ws = append(ws, w)
	}
	b.mu.Unlock()
	for _, w := range ws {
		syscall.Kill(-w.pid, syscall.SIGKILL)
	}
}
