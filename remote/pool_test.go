package remote_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/toworker/toworker/agent"
	"github.com/toworker/toworker/remote"
)

func labHosts() []string {
	var hs []string
	for _, s := range lab.Servers {
		hs = append(hs, s.Name)
	}
	return hs
}

// waitConnected waits until every host of p is connected.
func waitConnected(t *testing.T, p *remote.Pool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		all := true
		for _, hs := range p.Stats().Hosts {
			all = all && hs.Connected > 0
		}
		if all {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("hosts not all connected within 30s: %+v", p.Stats().Hosts)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// drain takes every pending run with Next and returns the results by input.
func drain(t *testing.T, p *remote.Pool) (map[int]int, map[string]int, []error) {
	t.Helper()
	got := map[int]int{}
	byHost := map[string]int{}
	var errs []error
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for p.Pending() > 0 {
		run, err := p.Next(ctx)
		if err != nil {
			t.Fatalf("Next: %v (pending %d)", err, p.Pending())
		}
		res, err := run.Wait()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var sq int
		if err := res.Decode(&sq); err != nil {
			t.Fatal(err)
		}
		n := run.Job().Data.(int)
		got[n]++
		byHost[res.Host]++
		if sq != n*n {
			t.Errorf("square(%d) = %d", n, sq)
		}
	}
	if _, err := p.Next(ctx); !errors.Is(err, remote.ErrNoPending) {
		t.Errorf("Next with nothing pending: %v, want ErrNoPending", err)
	}
	return got, byHost, errs
}

func TestPoolThousandJobs(t *testing.T) {
	p, _, _ := newPool(t, remote.PoolConfig{Hosts: labHosts(), MaxPerHost: 4})
	const n = 1000
	for i := range n {
		p.Submit(context.Background(), remote.Job{Func: Square.Name(), Data: i})
	}
	got, byHost, errs := drain(t, p)
	if len(errs) > 0 {
		t.Fatalf("%d errors, first: %v", len(errs), errs[0])
	}
	for i := range n {
		if got[i] != 1 {
			t.Fatalf("job %d accounted %d times", i, got[i])
		}
	}
	for _, h := range labHosts() {
		if byHost[h] == 0 {
			t.Errorf("host %s ran no job: %v", h, byHost)
		}
	}
	st := p.Stats()
	if st.Total.Submitted != n || st.Total.Done != n || st.Total.Failed != 0 || st.Total.Running != 0 || st.Total.Queued != 0 {
		t.Errorf("stats = %+v", st.Total)
	}
	sum := 0
	for h, hs := range st.Hosts {
		sum += hs.Done
		if hs.Done != byHost[h] {
			t.Errorf("stats say %s did %d jobs, results say %d", h, hs.Done, byHost[h])
		}
		if hs.Connected <= 0 || hs.Utilisation <= 0 || hs.Utilisation > 1 {
			t.Errorf("%s: connected %v utilisation %v", h, hs.Connected, hs.Utilisation)
		}
	}
	t.Logf("1000 jobs by host: %v", byHost)
}

func TestPoolHostDiesJobsRetriedElsewhere(t *testing.T) {
	victim := lab.Server("h2")
	t.Cleanup(func() {
		if !victim.Running() {
			if err := victim.Restart(); err != nil {
				t.Errorf("restart h2: %v", err)
			}
		}
	})
	var mu sync.Mutex
	failures := map[int]int{}
	p, _, _ := newPool(t, remote.PoolConfig{Hosts: labHosts(), MaxPerHost: 4, Retries: 3})
	waitConnected(t, p)
	const n = 300
	for i := range n {
		p.Submit(context.Background(), remote.Job{Func: SlowSquare.Name(), Data: i, Desc: fmt.Sprint("job ", i),
			OnFailure: func(err error) {
				mu.Lock()
				failures[i]++
				mu.Unlock()
				if !remote.IsFailure(err) {
					t.Errorf("OnFailure got %v, not a *FailureError", err)
				}
			}})
	}
	// Let some finish, then kill a host's sshd under the running jobs.
	for deadline := time.Now().Add(time.Minute); p.Stats().Hosts["h2"].Done < 10; {
		if time.Now().After(deadline) {
			t.Fatalf("h2 did not get 10 jobs done within a minute: %+v", p.Stats().Hosts)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := victim.Kill(); err != nil {
		t.Fatal(err)
	}
	killedAt := p.Stats().Total.Done
	for i := n; i < n+200; i++ { // more work after the loss
		p.Submit(context.Background(), remote.Job{Func: SlowSquare.Name(), Data: i})
	}
	got, _, errs := drain(t, p)
	if len(errs) > 0 {
		t.Fatalf("%d jobs failed, first: %v", len(errs), errs[0])
	}
	for i := range n + 200 {
		if got[i] != 1 {
			t.Fatalf("job %d accounted %d times", i, got[i])
		}
	}
	st := p.Stats()
	t.Logf("killed h2 after %d done; retried %d; h2 stats %+v", killedAt, st.Total.Retried, st.Hosts["h2"])
	if !st.Hosts["h2"].Down || st.Hosts["h2"].LastError == "" {
		t.Errorf("h2 not marked down with its error: %+v", st.Hosts["h2"])
	}
	mu.Lock()
	nf := len(failures)
	mu.Unlock()
	if st.Total.Retried != nf && st.Total.Retried < nf {
		t.Errorf("retried %d, but OnFailure saw %d jobs", st.Total.Retried, nf)
	}
	// A job pinned to the dead host fails with a clear error after its
	// timeout instead of hanging.
	_, err := p.Submit(context.Background(), remote.Job{Host: "h2", Func: Noop.Name(), Timeout: 2 * time.Second}).Wait()
	if !errors.Is(err, remote.ErrHostDown) || !strings.Contains(err.Error(), "h2") {
		t.Errorf("pinned to dead host: %v, want ErrHostDown naming h2", err)
	}
	// The host comes back and is put back in rotation.
	if err := victim.Restart(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := p.Submit(context.Background(), remote.Job{Host: "h2", Func: Noop.Name(), Timeout: 5 * time.Second}).Wait()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("h2 not back in rotation 30s after restart: %v", err)
		}
	}
}

func TestNoRetryWhenForbidden(t *testing.T) {
	victim := lab.Server("h3")
	t.Cleanup(func() {
		if !victim.Running() {
			victim.Restart()
		}
	})
	p, _, _ := newPool(t, remote.PoolConfig{Hosts: []string{"h3"}, Retries: 5})
	pids := make(chan string, 1)
	run := p.Submit(context.Background(), remote.Job{Host: "h3", Func: Sleep.Name(), Data: 300, NoRetry: true,
		OnOutput: func(l string) { pids <- l }})
	<-pids
	victim.Kill()
	res, err := run.Wait()
	if !remote.IsFailure(err) || res.Attempts != 1 {
		t.Fatalf("err=%v attempts=%d, want one failed attempt", err, res.Attempts)
	}
}

func TestRecyclingAndInit(t *testing.T) {
	p, _, _ := newPool(t, remote.PoolConfig{Hosts: []string{"h1"}, MaxPerHost: 1, MinWarm: -1, MaxJobsPerWorker: 3, Init: InitWorker.Name()})
	var pids []int
	for i := range 9 {
		res, err := p.Submit(context.Background(), remote.Job{Func: InitCount.Name()}).Wait()
		if err != nil {
			t.Fatal(err)
		}
		var runs int
		res.Decode(&runs)
		if runs != 1 {
			t.Errorf("job %d: init ran %d times in its worker, want 1", i, runs)
		}
		if res.WorkerJobs != i%3+1 {
			t.Errorf("job %d: worker's job count %d, want %d", i, res.WorkerJobs, i%3+1)
		}
		pids = append(pids, res.WorkerPID)
	}
	for i := range pids {
		same := pids[i] == pids[i/3*3]
		if !same {
			t.Errorf("jobs %d and %d ran in different workers: %v", i/3*3, i, pids)
		}
		if i%3 == 0 && i > 0 && pids[i] == pids[i-1] {
			t.Errorf("worker not recycled after 3 jobs: %v", pids)
		}
	}
	for i := 1; i < 9; i++ {
		if i%3 == 0 {
			waitGone(t, "recycled worker", pids[i-1], 5*time.Second)
		}
	}

	bad, _, _ := newPool(t, remote.PoolConfig{Hosts: []string{"h1"}, Init: InitFail.Name()})
	_, err := bad.Submit(context.Background(), remote.Job{Func: Noop.Name()}).Wait()
	var re *remote.RemoteError
	if !errors.As(err, &re) || re.Kind != remote.KindInit || !strings.Contains(re.Message, "database unreachable") {
		t.Fatalf("failing Init: %v, want KindInit with its message", err)
	}
}

// slogCapture records slog records.
type slogCapture struct {
	mu   sync.Mutex
	recs []string
}

func (c *slogCapture) Enabled(context.Context, slog.Level) bool { return true }
func (c *slogCapture) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s=%s", a.Key, a.Value); return true })
	c.mu.Lock()
	c.recs = append(c.recs, b.String())
	c.mu.Unlock()
	return nil
}
func (c *slogCapture) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c *slogCapture) WithGroup(string) slog.Handler      { return c }

func TestLogRecordsAndCascade(t *testing.T) {
	var capt slogCapture
	p, _, _ := newPool(t, remote.PoolConfig{Hosts: []string{"h1"}, Logger: slog.New(&capt)})
	if _, err := p.Submit(context.Background(), remote.Job{Func: Logs.Name(), Data: 5, Desc: "logger"}).Wait(); err != nil {
		t.Fatal(err)
	}
	if len(capt.recs) != 5 {
		t.Fatalf("got %d records: %q", len(capt.recs), capt.recs)
	}
	for i, r := range capt.recs {
		want := fmt.Sprintf("step host=h1 func=%s job=logger worker=w i=%d", Logs.Name(), i)
		if r != want {
			t.Errorf("record %d = %q, want %q", i, r, want)
		}
	}
	got, err := remote.CallOn(context.Background(), p, "", CascadeSquare, 7)
	if err != nil || got != 50 {
		t.Fatalf("cascade = %d, %v; want 50", got, err)
	}
}

func TestNextTryNextPending(t *testing.T) {
	p, _, _ := newPool(t, remote.PoolConfig{Hosts: []string{"h4"}, MaxPerHost: 2})
	if _, ok := p.TryNext(); ok {
		t.Fatal("TryNext on an empty pool returned a run")
	}
	slow := p.Submit(context.Background(), remote.Job{Func: Nap.Name(), Data: 400})
	fast := p.Submit(context.Background(), remote.Job{Func: Nap.Name(), Data: 1})
	if p.Pending() != 2 {
		t.Fatalf("Pending = %d, want 2", p.Pending())
	}
	first, err := p.Next(context.Background())
	if err != nil || first != fast {
		t.Fatalf("first finished = %v (%v), want the fast one", first, err)
	}
	if p.Pending() != 1 {
		t.Fatalf("Pending after Next = %d, want 1", p.Pending())
	}
	// Wait takes the outcome too: Next then has nothing left.
	if _, err := slow.Wait(); err != nil {
		t.Fatal(err)
	}
	if p.Pending() != 0 {
		t.Fatalf("Pending after Wait = %d, want 0", p.Pending())
	}
	if _, ok := p.TryNext(); ok {
		t.Fatal("TryNext returned a run already taken by Wait")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := p.Next(ctx); !errors.Is(err, remote.ErrNoPending) {
		t.Fatalf("Next = %v, want ErrNoPending", err)
	}
}

// Close and Kill leave no goroutine in the master and no process on the
// hosts, also when they do not wait for the agents to confirm (StopWait
// negative): the agents then stop on the goodbye alone.
func TestCloseAndKillLeaveNothing(t *testing.T) {
	remote.CloseDefault()
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for _, tc := range []struct {
		mode     string
		stopWait time.Duration
	}{{"close", 0}, {"kill", 0}, {"close", -1}, {"kill", -1}} {
		mode := tc.mode
		name := mode
		if tc.stopWait < 0 {
			name += " without waiting"
		}
		t.Run(name, func(t *testing.T) {
			cfg := remote.PoolConfig{Hosts: labHosts(), MaxPerHost: 2, StopWait: tc.stopWait, SSH: remote.SSHOptions{ConfigFile: lab.ConfigFile}}
			var out lockedBuf
			cfg.Stdout, cfg.Stderr = &out, &out
			p, err := remote.NewPool(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			// Close lets the jobs finish; Kill must stop them long before.
			seconds := 1
			if mode == "kill" {
				seconds = 60
			}
			pids := make(chan string, 8)
			var runs []*remote.Run
			for range 4 {
				runs = append(runs, p.Submit(context.Background(), remote.Job{Func: Sleep.Name(), Data: seconds, Timeout: -1,
					OnOutput: func(l string) { pids <- l }}))
			}
			var procs []int
			for range 4 {
				var w, s int
				fmt.Sscanf(<-pids, "pids %d %d", &w, &s)
				procs = append(procs, w, s, parentPID(w))
			}
			queued := p.Submit(context.Background(), remote.Job{Func: Sleep.Name(), Data: 1})
			if mode == "close" {
				p.Close() // graceful: everything submitted finishes
				for _, r := range append(runs, queued) {
					if _, err := r.Wait(); err != nil {
						t.Errorf("Close did not let a job finish: %v", err)
					}
				}
			} else {
				p.Kill()
				for _, r := range runs {
					if _, err := r.Wait(); err == nil {
						t.Errorf("a running job survived Kill")
					}
				}
			}
			if _, err := p.Submit(context.Background(), remote.Job{Func: Noop.Name()}).Wait(); !errors.Is(err, remote.ErrClosed) {
				t.Errorf("Submit after %s: %v, want ErrClosed", mode, err)
			}
			for _, pid := range procs {
				waitGone(t, "process after "+mode, pid, 5*time.Second)
			}
		})
	}
}

func TestQueueBound(t *testing.T) {
	p, _, _ := newPool(t, remote.PoolConfig{Hosts: []string{"h3"}, MaxPerHost: 1, QueueSize: 2})
	var runs []*remote.Run
	for range 3 { // one running, two queued
		runs = append(runs, p.Submit(context.Background(), remote.Job{Func: Nap.Name(), Data: 300}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := p.Submit(ctx, remote.Job{Func: Nap.Name(), Data: 1}).Wait()
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "queue full") {
		t.Fatalf("Submit to a full queue: %v, want a queue-full error", err)
	}
	if d := time.Since(start); d < 90*time.Millisecond {
		t.Errorf("Submit to a full queue returned after %v, before its context ended", d)
	}
	for _, r := range runs {
		if _, err := r.Wait(); err != nil {
			t.Fatal(err)
		}
	}
	// Room again once the queue drained.
	if _, err := p.Submit(context.Background(), remote.Job{Func: Nap.Name(), Data: 1}).Wait(); err != nil {
		t.Fatal(err)
	}
}

func TestInlineFunctions(t *testing.T) {
	var capt slogCapture
	p, _, _ := newPool(t, remote.PoolConfig{Hosts: []string{"h2"}, MaxPerHost: 8, Logger: slog.New(&capt)})
	res, err := p.Submit(context.Background(), remote.Job{Func: Noop.Name()}).Wait()
	if err != nil {
		t.Fatal(err)
	}
	boss := parentPID(res.WorkerPID)
	double := map[string]remote.Callback{"double": func(ctx context.Context, req remote.CallbackRequest) (any, error) {
		var n int
		err := req.Decode(&n)
		return 2 * n, err
	}}
	var runs []*remote.Run
	for i := range 20 { // concurrent inline calls, each with a callback
		runs = append(runs, p.Submit(context.Background(), remote.Job{Func: InlineInfo.Name(), Data: i, Callbacks: double}))
	}
	for i, r := range runs {
		res, err := r.Wait()
		if err != nil {
			t.Fatal(err)
		}
		var out []int
		if err := res.Decode(&out); err != nil {
			t.Fatal(err)
		}
		if len(out) != 2 || out[0] != boss || out[1] != 2*i {
			t.Errorf("inline call %d returned %v; want it to run in the boss (pid %d) and get %d from its callback", i, out, boss, 2*i)
		}
	}
	if len(capt.recs) != 20 {
		t.Errorf("got %d log records from inline calls, want 20", len(capt.recs))
	}
	// A Chdir is refused; a timeout cancels the function's context and the
	// host stays usable.
	_, err = p.Submit(context.Background(), remote.Job{Func: InlineNoop.Name(), Chdir: "/tmp"}).Wait()
	var re *remote.RemoteError
	if !errors.As(err, &re) || re.Kind != remote.KindChdir {
		t.Errorf("inline with Chdir: %v, want a chdir error", err)
	}
	_, err = p.Submit(context.Background(), remote.Job{Func: InlineSleep.Name(), Timeout: 300 * time.Millisecond}).Wait()
	if !errors.Is(err, remote.ErrTimeout) {
		t.Errorf("inline past its timeout: %v, want ErrTimeout", err)
	}
	if _, err := remote.CallOn(context.Background(), p, "h2", InlineNoop, struct{}{}); err != nil {
		t.Fatal(err)
	}
}

// A callback handler's context ends with the job it serves: when the job
// times out, and when the pool is killed; Kill returns only once the
// handler has.
func TestCallbackHandlerEndsWithItsJob(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for _, mode := range []string{"timeout", "kill"} {
		t.Run(mode, func(t *testing.T) {
			p, _, _ := newPool(t, remote.PoolConfig{Hosts: []string{"h1"}})
			if _, err := remote.CallOn(context.Background(), p, "h1", Noop, struct{}{}); err != nil { // connected
				t.Fatal(err)
			}
			entered := make(chan struct{})
			var returned, cancelled atomic.Bool
			job := remote.Job{Func: Hold.Name(), Timeout: -1, Callbacks: map[string]remote.Callback{
				"hold": func(ctx context.Context, _ remote.CallbackRequest) (any, error) {
					close(entered)
					defer returned.Store(true)
					select {
					case <-ctx.Done():
						cancelled.Store(true)
						return nil, ctx.Err()
					case <-time.After(10 * time.Second):
						return "the handler was never cancelled", nil
					}
				}}}
			if mode == "timeout" {
				job.Timeout = 200 * time.Millisecond
			}
			run := p.Submit(context.Background(), job)
			select {
			case <-entered:
			case <-time.After(20 * time.Second):
				_, err := run.Wait()
				t.Fatalf("the handler was never called: %v", err)
			}
			if mode == "kill" {
				p.Kill()
				if !returned.Load() {
					t.Fatal("Kill returned while the callback handler still ran")
				}
			}
			if _, err := run.Wait(); err == nil {
				t.Fatal("the job succeeded")
			}
			p.Close()
			if !returned.Load() {
				t.Fatal("Close returned while the callback handler still ran")
			}
			if !cancelled.Load() {
				t.Fatal("the callback handler's context was not cancelled when its job ended")
			}
		})
	}
}

// Pids returns the pids of the worker that runs it and of its boss.
var Pids = agent.Register("test.pids", func(ctx context.Context, _ struct{}) ([2]int, error) {
	return [2]int{os.Getpid(), os.Getppid()}, nil
})

// TestIdleTimeout: a host with no job for IdleTimeout has its connection
// closed, and its agent stops with its workers; a job running longer than
// that keeps it. The host's next job connects again, and finds the agent
// in the host's cache.
func TestIdleTimeout(t *testing.T) {
	const idle = time.Second
	p, _, _ := newPool(t, remote.PoolConfig{Hosts: []string{"h3"}, IdleTimeout: idle})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := remote.CallOn(ctx, p, "h3", Nap, int(2*idle/time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	pids, err := remote.CallOn(ctx, p, "h3", Pids, struct{}{})
	if err != nil {
		t.Fatal(err)
	}
	st := p.Stats()
	if st.Total.IdleCloses != 0 || st.Hosts["h3"].Connected < 2*idle {
		t.Fatalf("a host busy with a job longer than IdleTimeout was closed: %d idle closes, connected for %v",
			st.Total.IdleCloses, st.Hosts["h3"].Connected)
	}
	uploads := st.Total.Uploads
	waitGone(t, "the worker of an idle host", pids[0], 10*time.Second)
	waitGone(t, "the agent of an idle host", pids[1], 10*time.Second)
	st = p.Stats()
	if hs := st.Hosts["h3"]; hs.IdleCloses != 1 || hs.Connected != 0 || st.Total.IdleCloses != 1 {
		t.Fatalf("after the agent stopped: host %+v, %d idle closes in total", hs, st.Total.IdleCloses)
	}
	again, err := remote.CallOn(ctx, p, "h3", Pids, struct{}{})
	if err != nil {
		t.Fatalf("the next job on a host closed for idleness: %v", err)
	}
	if again[1] == pids[1] {
		t.Errorf("the next job ran on the old agent, pid %d", again[1])
	}
	if st := p.Stats(); st.Total.Uploads != uploads || st.Hosts["h3"].Connected == 0 {
		t.Errorf("after the next job: %d more uploads, connected for %v", st.Total.Uploads-uploads, st.Hosts["h3"].Connected)
	}
}
