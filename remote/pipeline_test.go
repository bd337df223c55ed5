package remote_test

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/toworker/toworker/agent"
	"github.com/toworker/toworker/remote"
)

// PipeTag prints a line naming its input, then returns its square.
var PipeTag = agent.Register("test.pipetag", func(ctx context.Context, n int) (int, error) {
	fmt.Printf("tag %d\n", n)
	fmt.Fprintf(os.Stderr, "etag %d\n", n)
	return n * n, nil
})

// PipeDie prints its worker's pid, naps, and exits the worker.
var PipeDie = agent.Register("test.pipedie", func(ctx context.Context, ms int) (int, error) {
	fmt.Printf("pid %d\n", os.Getpid())
	time.Sleep(time.Duration(ms) * time.Millisecond)
	os.Exit(3)
	return 0, nil
})

// PipeNap prints "started", then sleeps for the given milliseconds.
var PipeNap = agent.Register("test.pipenap", func(ctx context.Context, ms int) (int, error) {
	fmt.Println("started")
	time.Sleep(time.Duration(ms) * time.Millisecond)
	return ms, nil
})

// started submits a PipeNap of ms on h1 and returns once it runs: calls
// submitted at once go out from goroutines of their own, in any order.
func started(t *testing.T, p *remote.Pool, ms int) *remote.Run {
	t.Helper()
	up := make(chan struct{}, 1)
	r := p.Submit(context.Background(), remote.Job{Host: "h1", Func: PipeNap.Name(), Data: ms,
		OnOutput: func(string) { up <- struct{}{} }})
	select {
	case <-up:
	case <-r.Done():
		_, err := r.Wait()
		t.Fatalf("nap ended before it printed: %v", err)
	}
	return r
}

type MarkIn struct {
	Path    string
	DelayMS int
	Pad     []byte // makes the call large enough not to be queued on a worker
}

// mark waits DelayMS, then creates Path: proof that it ran that long.
func mark(ctx context.Context, in MarkIn) (int, error) {
	time.Sleep(time.Duration(in.DelayMS) * time.Millisecond)
	return 0, os.WriteFile(in.Path, []byte("ran"), 0o644)
}

// PipeMark runs mark in a worker, InlineMark in the boss (agent.Inline).
var (
	PipeMark   = agent.Register("test.pipemark", mark)
	InlineMark = agent.Register("test.inlinemark", mark, agent.Inline())
)

// pipelinePool is a connected pool on h1, so that calls leave in the order
// they are submitted (the first one of a new connection travels with the
// bootstrap, possibly after others).
func pipelinePool(t *testing.T, cfg remote.PoolConfig) *remote.Pool {
	t.Helper()
	cfg.Hosts = []string{"h1"}
	cfg.MinWarm = -1
	p, _, _ := newPool(t, cfg)
	if _, err := p.Submit(context.Background(), remote.Job{Host: "h1", Func: Noop.Name()}).Wait(); err != nil {
		t.Fatal(err)
	}
	return p
}

// With Pipeline, many calls run on MaxPerHost workers, each call's output
// and result its own.
func TestPipelineKeepsEachCallsOutputAndResult(t *testing.T) {
	p := pipelinePool(t, remote.PoolConfig{MaxPerHost: 2, Pipeline: 40})
	const n = 300
	var mu sync.Mutex
	out := make([][]string, n)
	runs := make([]*remote.Run, n)
	for i := range n {
		runs[i] = p.Submit(context.Background(), remote.Job{Host: "h1", Func: PipeTag.Name(), Data: i,
			OnOutput: func(l string) { mu.Lock(); out[i] = append(out[i], l); mu.Unlock() },
			OnError:  func(l string) { mu.Lock(); out[i] = append(out[i], l); mu.Unlock() }})
	}
	pids := map[int]bool{}
	for i, r := range runs {
		res, err := r.Wait()
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		var sq int
		if err := res.Decode(&sq); err != nil || sq != i*i {
			t.Fatalf("call %d: result %d, %v; want %d", i, sq, err, i*i)
		}
		pids[res.WorkerPID] = true
		mu.Lock()
		got := strings.Join(out[i], "|")
		mu.Unlock()
		if want := fmt.Sprintf("tag %d|etag %d", i, i); got != want && got != fmt.Sprintf("etag %d|tag %d", i, i) {
			t.Errorf("call %d: output %q, want %q", i, got, want)
		}
	}
	if len(pids) > 2 {
		t.Errorf("%d worker processes ran the calls; MaxPerHost is 2", len(pids))
	}
}

// A call beyond MaxPerHost is sent at once and waits on the agent, queued
// behind the running call on its worker: its Duration (from sending to
// result) covers the wait, and the same worker runs it.
func TestPipelineSendsAhead(t *testing.T) {
	p := pipelinePool(t, remote.PoolConfig{MaxPerHost: 1, Pipeline: 1})
	a := started(t, p, 400)
	b := p.Submit(context.Background(), remote.Job{Host: "h1", Func: Square.Name(), Data: 7})
	time.Sleep(50 * time.Millisecond) // b is dispatched
	if hs := p.Stats().Hosts["h1"]; hs.WorkersBusy != 1 || hs.Waiting != 1 {
		t.Errorf("Stats while one call runs and one waits: WorkersBusy %d, Waiting %d; want 1 and 1", hs.WorkersBusy, hs.Waiting)
	}
	ra, err := a.Wait()
	if err != nil {
		t.Fatal(err)
	}
	rb, err := b.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if rb.Duration < 300*time.Millisecond {
		t.Errorf("second call took %v from sending to result; sent ahead, it waits for the first (400 ms)", rb.Duration)
	}
	if ra.WorkerPID != rb.WorkerPID {
		t.Errorf("calls ran in workers %d and %d; MaxPerHost 1 allows one", ra.WorkerPID, rb.WorkerPID)
	}
	// Without Pipeline, the second call is sent when the first is done.
	p2 := pipelinePool(t, remote.PoolConfig{MaxPerHost: 1})
	a = started(t, p2, 400)
	b = p2.Submit(context.Background(), remote.Job{Host: "h1", Func: Square.Name(), Data: 7})
	a.Wait()
	if rb, err = b.Wait(); err != nil {
		t.Fatal(err)
	}
	if rb.Duration >= 300*time.Millisecond {
		t.Errorf("without Pipeline the second call took %v from sending to result: it was sent before a worker was free", rb.Duration)
	}
}

// A worker that dies with calls queued behind its job: they never started,
// so they run on another worker.
func TestPipelineQueuedCallsSurviveWorkerDeath(t *testing.T) {
	p := pipelinePool(t, remote.PoolConfig{MaxPerHost: 1, Pipeline: 3})
	pid := make(chan string, 1)
	a := p.Submit(context.Background(), remote.Job{Host: "h1", Func: PipeDie.Name(), Data: 400,
		OnOutput: func(l string) { pid <- l }})
	dead := <-pid
	var queued []*remote.Run
	for n := range 3 {
		queued = append(queued, p.Submit(context.Background(), remote.Job{Host: "h1", Func: Square.Name(), Data: 9 + n}))
	}
	if _, err := a.Wait(); err == nil {
		t.Fatal("the call whose worker exited succeeded")
	}
	for n, r := range queued {
		res, err := r.Wait()
		if err != nil {
			t.Fatalf("queued call %d: %v", n, err)
		}
		var sq int
		if err := res.Decode(&sq); err != nil || sq != (9+n)*(9+n) {
			t.Fatalf("queued call %d: %d, %v", n, sq, err)
		}
		if res.Duration < 300*time.Millisecond {
			t.Errorf("queued call %d took %v from sending: it was not sent ahead, so this test proves nothing", n, res.Duration)
		}
		if dead == fmt.Sprintf("pid %d", res.WorkerPID) {
			t.Errorf("queued call %d ran in the worker that exited (%s)", n, dead)
		}
	}
}

// Cancelling calls that wait on the agent: none of the ones waiting in the
// boss (a large call, and an Inline call, which waits for MaxPerHost too)
// nor the one queued on the busy worker ever starts (the worker skips it,
// through the start gate), and the worker, whose own job was not
// cancelled, lives on.
func TestPipelineCancelWaitingCalls(t *testing.T) {
	p := pipelinePool(t, remote.PoolConfig{MaxPerHost: 1, Pipeline: 3})
	dir := t.TempDir()
	a := started(t, p, 1500)
	ctx, cancel := context.WithCancel(context.Background())
	onWorker := filepath.Join(dir, "on-worker")
	inBoss := filepath.Join(dir, "in-boss")
	b := p.Submit(ctx, remote.Job{Host: "h1", Func: PipeMark.Name(), Data: MarkIn{Path: onWorker}})
	big := make([]byte, 64<<10) // above what is queued on a worker
	rand.Read(big)
	c := p.Submit(ctx, remote.Job{Host: "h1", Func: PipeMark.Name(), Data: MarkIn{Path: inBoss, Pad: big}})
	inlineWaits := filepath.Join(dir, "inline")
	d := p.Submit(ctx, remote.Job{Host: "h1", Func: InlineMark.Name(), Data: MarkIn{Path: inlineWaits}})
	time.Sleep(300 * time.Millisecond) // all reach the agent
	if _, err := os.Stat(inlineWaits); err == nil {
		t.Errorf("an Inline call ran while MaxPerHost calls ran")
	}
	cancel()
	for name, r := range map[string]*remote.Run{"queued on the worker": b, "waiting in the boss": c, "Inline, waiting in the boss": d} {
		if _, err := r.Wait(); !errors.Is(err, context.Canceled) {
			t.Errorf("%s: err = %v, want context.Canceled", name, err)
		}
	}
	ra, err := a.Wait()
	if err != nil {
		t.Fatalf("the running call: %v", err)
	}
	e, err := p.Submit(context.Background(), remote.Job{Host: "h1", Func: Echo.Name(), Data: big}).Wait()
	if err != nil {
		t.Fatalf("host after the cancels: %v", err)
	}
	var back []byte
	if err := e.Decode(&back); err != nil || !bytes.Equal(back, big) {
		t.Fatalf("echo after the cancels: %v", err)
	}
	if e.WorkerPID != ra.WorkerPID {
		t.Errorf("the worker was replaced (pid %d, then %d): a cancel of a call queued behind its job killed it", ra.WorkerPID, e.WorkerPID)
	}
	for _, f := range []string{onWorker, inBoss, inlineWaits} {
		if _, err := os.Stat(f); err == nil {
			t.Errorf("cancelled call ran: %s exists", filepath.Base(f))
		}
	}
}

// Large calls, which wait in the boss rather than on a worker, and workers
// recycled by MaxJobsPerWorker, with Pipeline.
func TestPipelineLargeCallsAndRecycling(t *testing.T) {
	p := pipelinePool(t, remote.PoolConfig{MaxPerHost: 2, Pipeline: 6, MaxJobsPerWorker: 3})
	var runs []*remote.Run
	var inputs [][]byte
	for i := range 24 {
		size := 100
		if i%3 == 0 {
			size = 300 << 10 // several frames
		}
		b := make([]byte, size)
		rand.Read(b)
		inputs = append(inputs, b)
		runs = append(runs, p.Submit(context.Background(), remote.Job{Host: "h1", Func: Echo.Name(), Data: b}))
	}
	pids := map[int]bool{}
	for i, r := range runs {
		res, err := r.Wait()
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		var back []byte
		if err := res.Decode(&back); err != nil || !bytes.Equal(back, inputs[i]) {
			t.Fatalf("call %d: %d bytes back, %v; want its %d", i, len(back), err, len(inputs[i]))
		}
		if res.WorkerJobs > 3 {
			t.Errorf("call %d was job %d of its worker; MaxJobsPerWorker is 3", i, res.WorkerJobs)
		}
		pids[res.WorkerPID] = true
	}
	if len(pids) < 8 {
		t.Errorf("24 calls ran in %d workers; with 3 jobs each there must be at least 8", len(pids))
	}
}

// A mix of calls with Pipeline, Inline or in workers, some crashing their
// worker, some cancelled while they wait or run: every call gets exactly
// one outcome, successful ones the right result, no more than MaxPerHost
// naps overlap, and the host serves calls afterwards.
func TestPipelineMixedFaults(t *testing.T) {
	p := pipelinePool(t, remote.PoolConfig{MaxPerHost: 2, Pipeline: 30, MaxJobsPerWorker: 7})
	rng := mrand.New(mrand.NewPCG(7, 7)) // fixed: the same mix every run
	type call struct {
		run    *remote.Run
		n      int
		kind   string
		cancel context.CancelFunc
	}
	var calls []call
	for i := range 150 {
		ctx, cancel := context.WithCancel(context.Background())
		c := call{n: i, cancel: cancel}
		switch r := rng.IntN(20); {
		case r == 0:
			c.kind = "die"
			c.run = p.Submit(ctx, remote.Job{Host: "h1", Func: PipeDie.Name(), Data: 5, OnOutput: func(string) {}})
		case r < 3:
			c.kind = "nap"
			c.run = p.Submit(ctx, remote.Job{Host: "h1", Func: PipeSpan.Name(), Data: 20})
		case r < 5:
			c.kind = "inline nap"
			c.run = p.Submit(ctx, remote.Job{Host: "h1", Func: InlineSpan.Name(), Data: 10})
		case r < 7:
			c.kind = "inline square"
			c.run = p.Submit(ctx, remote.Job{Host: "h1", Func: InlineSquare.Name(), Data: i})
		default:
			c.kind = "square"
			c.run = p.Submit(ctx, remote.Job{Host: "h1", Func: Square.Name(), Data: i})
		}
		calls = append(calls, c)
		if rng.IntN(8) == 0 {
			// Cancel an earlier call: waiting, queued on a worker, running or done.
			calls[rng.IntN(len(calls))].cancel()
		}
	}
	deadline := time.After(60 * time.Second)
	var spans []Span
	for _, c := range calls {
		select {
		case <-c.run.Done():
		case <-deadline:
			t.Fatalf("call %d (%s) has no outcome after 60 s", c.n, c.kind)
		}
		res, err := c.run.Wait()
		c.cancel()
		switch {
		case errors.Is(err, context.Canceled):
		case c.kind == "die":
			if err == nil {
				t.Errorf("call %d: the call that exits its worker succeeded", c.n)
			}
		case err != nil:
			t.Errorf("call %d (%s): %v", c.n, c.kind, err)
		case c.kind == "square" || c.kind == "inline square":
			var sq int
			if err := res.Decode(&sq); err != nil || sq != c.n*c.n {
				t.Errorf("call %d (%s): %d, %v; want %d", c.n, c.kind, sq, err, c.n*c.n)
			}
		default: // naps
			var s Span
			if err := res.Decode(&s); err != nil {
				t.Errorf("call %d (%s): %v", c.n, c.kind, err)
			}
			spans = append(spans, s)
		}
	}
	if n := maxOverlap(spans); n > 2 {
		t.Errorf("%d naps ran at once, Inline or not; MaxPerHost is 2", n)
	}
	if _, err := p.Submit(context.Background(), remote.Job{Host: "h1", Func: Square.Name(), Data: 3}).Wait(); err != nil {
		t.Fatalf("host after the mix: %v", err)
	}
}

// Callbacks of pipelined calls reach the master and their replies the
// right call, while other calls wait queued behind them.
func TestPipelineCallbacks(t *testing.T) {
	p := pipelinePool(t, remote.PoolConfig{MaxPerHost: 2, Pipeline: 18})
	var mu sync.Mutex
	progress := map[int]int{}
	var runs []*remote.Run
	for i := range 40 {
		runs = append(runs, p.Submit(context.Background(), remote.Job{Host: "h1", Func: Count.Name(),
			Data: CountIn{Words: []string{fmt.Sprint(i)}}, OnOutput: func(string) {}, OnError: func(string) {},
			Callbacks: map[string]remote.Callback{"progress": func(ctx context.Context, req remote.CallbackRequest) (any, error) {
				mu.Lock()
				progress[i]++
				mu.Unlock()
				return fmt.Sprintf("ack %d", i), nil
			}}}))
	}
	for i, r := range runs {
		res, err := r.Wait()
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		var out CountOut
		if err := res.Decode(&out); err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("ack %d", i)
		if len(out.Acks) != 2 || out.Acks[0] != want || out.Acks[1] != want {
			t.Errorf("call %d got replies %q, want two %q", i, out.Acks, want)
		}
	}
	for i := range runs {
		if progress[i] != 2 {
			t.Errorf("call %d: %d callbacks, want 2", i, progress[i])
		}
	}
}

// Span is when a call ran on the host, in Unix nanoseconds.
type Span struct{ Start, End int64 }

// spanFor sleeps ms and reports when it ran.
func spanFor(ctx context.Context, ms int) (Span, error) {
	s := Span{Start: time.Now().UnixNano()}
	time.Sleep(time.Duration(ms) * time.Millisecond)
	s.End = time.Now().UnixNano()
	return s, nil
}

// PipeSpan runs in a worker, InlineSpan in the boss (agent.Inline).
var (
	PipeSpan   = agent.Register("test.pipespan", spanFor)
	InlineSpan = agent.Register("test.inlinespan", spanFor, agent.Inline())
)

// InlineSquare is Square in the boss (agent.Inline).
var InlineSquare = agent.Register("test.inlinesquare", func(ctx context.Context, n int) (int, error) { return n * n, nil }, agent.Inline())

// maxOverlap is the largest number of spans running at one instant.
func maxOverlap(spans []Span) int {
	type edge struct {
		at    int64
		delta int
	}
	var edges []edge
	for _, s := range spans {
		edges = append(edges, edge{s.Start, 1}, edge{s.End, -1})
	}
	slices.SortFunc(edges, func(a, b edge) int { return cmp.Or(cmp.Compare(a.at, b.at), a.delta-b.delta) })
	n, most := 0, 0
	for _, e := range edges {
		n += e.delta
		most = max(most, n)
	}
	return most
}

// MaxPerHost bounds the jobs running on a host also with Pipeline, and
// also for Inline functions, which run in the boss: the built-in Exec is
// one, so commands sent ahead wait their turn too.
func TestPipelineInlineCallsHonourMaxPerHost(t *testing.T) {
	p := pipelinePool(t, remote.PoolConfig{MaxPerHost: 2, Pipeline: 20})
	var runs []*remote.Run
	for i := range 12 {
		fn := []string{InlineSpan.Name(), PipeSpan.Name(), InlineSpan.Name()}[i%3]
		runs = append(runs, p.Submit(context.Background(), remote.Job{Host: "h1", Func: fn, Data: 60}))
	}
	var mu sync.Mutex
	stamps := make([][]int64, 3)
	for k := range 3 {
		runs = append(runs, p.Submit(context.Background(), remote.Job{Host: "h1", Func: agent.Exec.Name(),
			Data: agent.ExecIn{Command: "date +%s%N; sleep 0.06; date +%s%N"},
			OnOutput: func(l string) {
				var ns int64
				if _, err := fmt.Sscan(l, &ns); err != nil {
					t.Errorf("command output %q: %v", l, err)
				}
				mu.Lock()
				stamps[k] = append(stamps[k], ns)
				mu.Unlock()
			}}))
	}
	time.Sleep(30 * time.Millisecond)
	if hs := p.Stats().Hosts["h1"]; hs.WorkersBusy > 2 || hs.WorkersBusy+hs.Waiting != 15 {
		t.Errorf("Stats with 15 calls sent: WorkersBusy %d, Waiting %d; want 2 busy (at most), the rest waiting", hs.WorkersBusy, hs.Waiting)
	}
	var spans []Span
	for i, r := range runs {
		res, err := r.Wait()
		if err != nil {
			t.Fatalf("call %d (%s): %v", i, r.Job().Func, err)
		}
		if r.Job().Func == agent.Exec.Name() {
			continue
		}
		var s Span
		if err := res.Decode(&s); err != nil {
			t.Fatal(err)
		}
		spans = append(spans, s)
	}
	mu.Lock()
	for k, st := range stamps {
		if len(st) != 2 {
			t.Fatalf("command %d printed %d stamps, want its start and end", k, len(st))
		}
		spans = append(spans, Span{st[0], st[1]})
	}
	mu.Unlock()
	if n := maxOverlap(spans); n > 2 {
		t.Errorf("%d jobs ran at once on the host; MaxPerHost is 2", n)
	}
}
