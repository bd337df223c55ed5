package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/toworker/toworker/agent"
	"github.com/toworker/toworker/internal/sshdial"
	"github.com/toworker/toworker/remote"
)

// The functions the benchmarks call. benchlab is its own agent.
var (
	Noop = agent.Register("bench.noop", func(ctx context.Context, _ struct{}) (struct{}, error) { return struct{}{}, nil })
	// InlineNoop is the same no-op run in the boss (agent.Inline): no hop to
	// a worker process.
	InlineNoop = agent.Register("bench.inlinenoop", func(ctx context.Context, _ struct{}) (struct{}, error) { return struct{}{}, nil }, agent.Inline())
	Echo       = agent.Register("bench.echo", func(ctx context.Context, b []byte) ([]byte, error) { return b, nil })
)

// params are the sizes of one run.
type params struct {
	coldRounds, firstRounds int
	warmCalls, warmBlocks   int
	parRounds               int
	parDur                  time.Duration
	pipeRounds, pipeTotal   int
	pipeWindow              int
	pipeConfigs             []pipeConfig
	echoSize, echoRounds    int
	fanRounds, gatherRounds int
	slowRounds, slowFirst   int
	slowWarmCalls           int
	budget                  time.Duration // per figure, beyond which fewer rounds are run
}

var fullParams = params{
	coldRounds: 20, firstRounds: 8,
	warmCalls: 2000, warmBlocks: 20,
	parRounds: 5, parDur: 2 * time.Second,
	pipeRounds: 5, pipeTotal: 20000, pipeWindow: 200, pipeConfigs: []pipeConfig{{4, 0}, {16, 0}, {64, 0}, {2, 198}, {4, 196}, {8, 192}},
	echoSize: 64 << 20, echoRounds: 5,
	fanRounds: 8, gatherRounds: 300,
	slowRounds: 5, slowFirst: 3, slowWarmCalls: 20,
	budget: 90 * time.Second,
}

var smokeParams = params{
	coldRounds: 3, firstRounds: 2,
	warmCalls: 300, warmBlocks: 3,
	parRounds: 2, parDur: 200 * time.Millisecond,
	pipeRounds: 2, pipeTotal: 1000, pipeWindow: 200, pipeConfigs: []pipeConfig{{16, 0}, {4, 196}},
	echoSize: 8 << 20, echoRounds: 2,
	fanRounds: 2, gatherRounds: 20,
	slowRounds: 2, slowFirst: 1, slowWarmCalls: 3,
	budget: 8 * time.Second,
}

// variantFn is one variant of a figure: a function returning one sample in
// the figure's unit, or skip saying why it is not run.
type variantFn struct {
	name, role string
	run        func() (float64, error)
	skip       string
}

// measure runs the variants interleaved: one untimed warm-up round (which
// also fills caches and primes agents), then up to rounds rounds, reversing
// the order of the variants every other round; fewer rounds (at least one)
// when the figure's time budget runs out.
func (e *env) measure(f *Figure, rounds int, budget time.Duration, p99 bool, vs ...variantFn) {
	samples := make([][]float64, len(vs))
	var order []int
	for i, v := range vs {
		if v.skip == "" {
			order = append(order, i)
		}
	}
	start := time.Now()
rounds:
	for round := -1; round < rounds; round++ {
		if round >= 1 && time.Since(start) > budget {
			f.addNote(fmt.Sprintf("%d of %d rounds: the figure's time budget (%v) ran out", round, rounds, budget))
			break
		}
		idx := slices.Clone(order)
		if round%2 != 0 {
			slices.Reverse(idx)
		}
		for _, i := range idx {
			if err := e.ctx.Err(); err != nil {
				e.fail(f, vs[i].name, err)
				break rounds
			}
			conns := e.lab.Connections()
			v, err := vs[i].run()
			if err != nil {
				e.fail(f, vs[i].name, err)
				break rounds
			}
			if round >= 0 {
				samples[i] = append(samples[i], v)
			}
			e.pause(conns)
		}
	}
	for i, v := range vs {
		f.Variants = append(f.Variants, Variant{Name: v.name, Role: v.role, Note: v.skip, Stat: summarize(samples[i], p99)})
		if v.skip != "" && v.role == "toworker" {
			f.Result = "skipped"
			f.addNote(v.skip)
		}
	}
}

// pause lets the previous sample's teardown finish before the next one
// starts: it waits (up to a second) until the lab's sshd handle no more
// connections than the conns they had before the sample, then e.settle
// for what outlives them (bosses stopping). A client that exits before the
// host side has cleaned up (ssh once it has the exit status, the toworker
// command once it has its results) thus leaves its teardown out of the
// next sample, whichever variant that is.
func (e *env) pause(conns int) {
	for deadline := time.Now().Add(time.Second); e.lab.Connections() > conns && time.Now().Before(deadline); {
		time.Sleep(2 * time.Millisecond)
	}
	if e.settle > 0 {
		time.Sleep(e.settle)
	}
}

func (f *Figure) addNote(s string) {
	if f.Note != "" {
		f.Note += " "
	}
	f.Note += s
	if !strings.HasSuffix(s, ".") {
		f.Note += "."
	}
}

func (e *env) fail(f *Figure, what string, err error) {
	f.errored = true
	msg := fmt.Sprintf("%s: %s: %v", f.Title, what, err)
	e.rep.Errors = append(e.rep.Errors, msg)
	fmt.Fprintln(os.Stderr, "benchlab: error:", msg)
}

func (e *env) add(f *Figure) *Figure {
	f.evaluate()
	e.rep.Figures = append(e.rep.Figures, f)
	fmt.Fprintf(os.Stderr, "benchlab: %-28s %s\n", f.ID, summaryLine(f))
	return f
}

func summaryLine(f *Figure) string {
	var parts []string
	for _, v := range f.Variants {
		if v.Stat != nil {
			parts = append(parts, fmt.Sprintf("%s %s %s", v.Name, fmtVal(v.Stat.Median, f.Unit), f.Unit))
		}
	}
	s := strings.Join(parts, "; ")
	if f.Ratio != nil {
		s += fmt.Sprintf("; ratio %.2f", *f.Ratio)
	}
	return s + " → " + f.Result
}

// profile runs fn under the CPU profiler when -cpuprofile is set.
func (e *env) profile(name string, fn func()) {
	if e.prof == "" {
		fn()
		return
	}
	path := filepath.Join(e.prof, name+".pprof")
	out, err := os.Create(path)
	if err == nil {
		err = pprof.StartCPUProfile(out)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchlab: cpu profile:", err)
		fn()
		return
	}
	fn()
	pprof.StopCPUProfile()
	out.Close()
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// newPool starts a pool with our ssh_config whose job output is discarded.
func (e *env) newPool(cfg remote.PoolConfig) (*remote.Pool, error) {
	cfg.SSH.ConfigFile = e.cfg
	cfg.Stdout, cfg.Stderr, cfg.Logger = io.Discard, io.Discard, quiet
	return remote.NewPool(e.ctx, cfg)
}

func (e *env) noop(p *remote.Pool, host string) error {
	_, err := remote.CallOn(e.ctx, p, host, Noop, struct{}{})
	return err
}

// gather calls the no-op on every host at once and waits for all.
func (e *env) gather(p *remote.Pool, hosts []string) error {
	runs := make([]*remote.Run, len(hosts))
	for i, h := range hosts {
		runs[i] = p.Submit(e.ctx, remote.Job{Host: h, Func: Noop.Name()})
	}
	var errs []error
	for _, r := range runs {
		if _, err := r.Wait(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// coldPool times a new pool's first no-op call on host; uploads is how many
// agents the pool uploaded.
func (e *env) coldPool(host string) (d time.Duration, uploads int, err error) {
	return e.coldPoolCfg(host, remote.PoolConfig{Hosts: []string{host}})
}

// coldPoolLazy is coldPool with a pool that has no Hosts: the call's job
// adds the host and opens its connection (as remote.Call and the CLI do).
func (e *env) coldPoolLazy(host string) (d time.Duration, uploads int, err error) {
	return e.coldPoolCfg(host, remote.PoolConfig{})
}

func (e *env) coldPoolCfg(host string, cfg remote.PoolConfig) (d time.Duration, uploads int, err error) {
	t0 := time.Now()
	p, err := e.newPool(cfg)
	if err != nil {
		return 0, 0, err
	}
	err = e.noop(p, host)
	d = time.Since(t0)
	uploads = p.Stats().Total.Uploads
	p.Close()
	return d, uploads, err
}

// coldFanout times a new pool's first no-op call on every host, gathered.
func (e *env) coldFanout(hosts []string) (time.Duration, error) {
	t0 := time.Now()
	p, err := e.newPool(remote.PoolConfig{Hosts: hosts})
	if err != nil {
		return 0, err
	}
	err = e.gather(p, hosts)
	d := time.Since(t0)
	p.Close()
	return d, err
}

// clearCache removes a host's agent cache, so the next connection uploads.
func clearCache(cacheDir string) error {
	return os.RemoveAll(filepath.Join(cacheDir, "toworker"))
}

// prime puts benchlab's agent (and the CLI's) in every host's cache.
func (e *env) prime() error {
	p, err := e.newPool(remote.PoolConfig{Hosts: e.hosts})
	if err != nil {
		return err
	}
	err = e.gather(p, e.hosts)
	p.Close()
	if err != nil {
		return fmt.Errorf("prime agents: %w", err)
	}
	if e.tw != "" {
		if _, err := e.cli(2*time.Minute, "run", "-H", hostRange(len(e.hosts)), "-F", e.cfg, "--", "true"); err != nil {
			e.rep.Notes = append(e.rep.Notes, fmt.Sprintf("the CLI failed on all hosts (%v); its rows are skipped", err))
			e.twNote = "the CLI failed to run on all hosts: " + err.Error()
			e.tw = ""
		}
	}
	return nil
}

func hostRange(n int) string { return fmt.Sprintf("h[1-%d]", n) }

// ---------------------------------------------------------------------------
// Cold start

func (e *env) coldFigures(pp params) {
	h1 := e.lab.Servers[0]
	sshTrue := variantFn{name: "`ssh h1 true`", role: "baseline", run: func() (float64, error) {
		d, err := e.ssh("h1", "true")
		return ms(d), err
	}}

	f := &Figure{ID: "cold_cli", Section: "cold", Unit: "ms",
		Title:  "New process: `toworker run -H h1 -- true`",
		Target: "≤ 0.70 × ssh", Checks: []Check{{"ratio", "<=", 0.70}}}
	cli := variantFn{name: "`toworker run -H h1 -- true`", role: "toworker", skip: e.twNote, run: func() (float64, error) {
		d, err := e.cli(30*time.Second, "run", "-H", "h1", "-F", e.cfg, "--", "true")
		return ms(d), err
	}}
	e.measure(f, pp.coldRounds, pp.budget, false, sshTrue, cli)
	e.add(f)

	f = &Figure{ID: "cold_inproc", Section: "cold", Unit: "ms",
		Title:  "In process: new Pool + first CallOn of a no-op",
		Target: "≤ 0.60 × ssh", Checks: []Check{{"ratio", "<=", 0.60}}}
	e.profile("cold_inproc", func() {
		e.measure(f, pp.coldRounds, pp.budget, false, sshTrue, variantFn{name: "new Pool + CallOn(noop)", role: "toworker", run: func() (float64, error) {
			d, _, err := e.coldPool("h1")
			return ms(d), err
		}}, variantFn{name: "new Pool without Hosts + CallOn(noop): the job opens the connection", role: "reference", run: func() (float64, error) {
			d, _, err := e.coldPoolLazy("h1")
			return ms(d), err
		}})
	})
	e.add(f)

	f = &Figure{ID: "first_ever", Section: "cold", Unit: "ms",
		Title:  "First ever run on a host (cache removed, agent uploaded)",
		Target: "≤ 1.5 × ssh", Checks: []Check{{"ratio", "<=", 1.5}}}
	exe, _ := os.Executable()
	raw, gz, _ := gzipSize(exe)
	f.Extra = map[string]any{"agent": exe, "agent_bytes": raw, "agent_gzip_bytes": gz}
	f.addNote(fmt.Sprintf("The in-process master uploads itself (benchlab, built by go run with symbols): %.1f MiB, %.1f MiB gzip -1. Stats().Total.Uploads is checked to be 1 in every round.", mib(raw), mib(gz)))
	cliFirst := variantFn{name: "`toworker run -H h1 -- true`, cache removed", role: "reference", skip: e.twNote, run: func() (float64, error) {
		if err := clearCache(h1.CacheDir); err != nil {
			return 0, err
		}
		d, err := e.cli(60*time.Second, "run", "-H", "h1", "-F", e.cfg, "--", "true")
		return ms(d), err
	}}
	e.profile("first_ever", func() {
		e.measure(f, pp.firstRounds, pp.budget, false, sshTrue, variantFn{name: "new Pool + CallOn(noop), cache removed", role: "toworker", run: func() (float64, error) {
			if err := clearCache(h1.CacheDir); err != nil {
				return 0, err
			}
			d, up, err := e.coldPool("h1")
			if err == nil && up != 1 {
				err = fmt.Errorf("expected 1 agent upload, the pool counted %d", up)
			}
			return ms(d), err
		}}, cliFirst)
	})
	e.add(f)
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// ---------------------------------------------------------------------------
// Warm calls on one host

func (e *env) callFigures(pp params) {
	// Sequential, interleaved in blocks with ssh over a ControlMaster.
	f := &Figure{ID: "warm_seq", Section: "calls", Unit: "ms",
		Title:  fmt.Sprintf("Warm no-op CallOn, sequential, %d calls", pp.warmCalls),
		Target: "median ≤ 0.10 ms, p99 ≤ 0.5 ms", Checks: []Check{{"median", "<=", 0.10}, {"p99", "<=", 0.5}}}
	e.warmSeq(f, pp)
	e.add(f)

	f = &Figure{ID: "par16", Section: "calls", Unit: "calls/s", higher: true,
		Title:  "No-op calls/s, 16 goroutines, MaxPerHost 16",
		Target: "≥ 25,000 calls/s", Checks: []Check{{"median", ">=", 25000}}}
	e.profile("par16", func() { e.parallel(f, pp) })
	e.add(f)

	f = &Figure{ID: "pipelined", Section: "calls", Unit: "calls/s", higher: true,
		Title:  fmt.Sprintf("No-op calls/s, pipelined: Submit with %d in flight", pp.pipeWindow),
		Target: "≥ 100,000 calls/s", Checks: []Check{{"median", ">=", 100000}}}
	e.profile("pipelined", func() { e.pipelined(f, pp) })
	e.add(f)
}

// oneProcNote explains the rows measured with the master at GOMAXPROCS 1.
const oneProcNote = "\"The master at GOMAXPROCS 1\" rows run the same calls with benchlab's process limited to one processor (runtime.GOMAXPROCS(1)): for sequential calls in blocks interleaved with the default rows, for pipelined calls right after the other configurations, with the best of them. Here the master shares 2 cores with sshd and the agent; after each goroutine hand-off the Go scheduler wakes an idle thread that spins looking for work, taking CPU that sshd and the agent need at that moment. A master on a machine of its own does not compete so; toworker leaves GOMAXPROCS to the program that uses it (the agent's boss runs at 1)."

func (e *env) warmSeq(f *Figure, pp params) {
	p, err := e.newPool(remote.PoolConfig{Hosts: []string{"h1"}})
	if err != nil {
		e.fail(f, "NewPool", err)
		return
	}
	defer p.Close()
	for range 100 {
		if err := e.noop(p, "h1"); err != nil {
			e.fail(f, "warm-up", err)
			return
		}
	}
	sock, stop, cmErr := e.controlMaster("h1")
	if cmErr == nil {
		defer stop()
		e.ssh("-o", "ControlPath="+sock, "h1", "true") // warm-up
	}
	var calls, inline, oneProc, mux []float64
	var mallocs, bytesAlloc uint64
	cpuSum := cpuSnap{}
	per := max(1, pp.warmCalls/pp.warmBlocks)
	e.profile("warm_seq", func() {
		for b := 0; b < pp.warmBlocks && e.ctx.Err() == nil; b++ {
			if cmErr == nil {
				d, err := e.ssh("-o", "ControlPath="+sock, "h1", "true")
				if err != nil {
					e.fail(f, "ssh over ControlMaster", err)
					return
				}
				mux = append(mux, ms(d))
			}
			var m0, m1 runtime.MemStats
			runtime.ReadMemStats(&m0)
			c0 := e.cpuSnapshot()
			for range per {
				t0 := time.Now()
				if err := e.noop(p, "h1"); err != nil {
					e.fail(f, "CallOn", err)
					return
				}
				calls = append(calls, ms(time.Since(t0)))
			}
			c1 := e.cpuSnapshot()
			for k, v := range c1 {
				cpuSum[k] += v - c0[k]
			}
			runtime.ReadMemStats(&m1)
			mallocs += m1.Mallocs - m0.Mallocs
			bytesAlloc += m1.TotalAlloc - m0.TotalAlloc
			// The same through agent.Inline, for comparison: no worker hop.
			for range per {
				t0 := time.Now()
				if _, err := remote.CallOn(e.ctx, p, "h1", InlineNoop, struct{}{}); err != nil {
					e.fail(f, "CallOn inline", err)
					return
				}
				inline = append(inline, ms(time.Since(t0)))
			}
			// The worker no-op again with this process on one processor.
			prev := runtime.GOMAXPROCS(1)
			for range per {
				t0 := time.Now()
				if err := e.noop(p, "h1"); err != nil {
					runtime.GOMAXPROCS(prev)
					e.fail(f, "CallOn, GOMAXPROCS 1", err)
					return
				}
				oneProc = append(oneProc, ms(time.Since(t0)))
			}
			runtime.GOMAXPROCS(prev)
		}
	})
	muxV := Variant{Name: "`ssh h1 true` over a ControlMaster", Role: "baseline", Stat: summarize(mux, false)}
	if cmErr != nil {
		muxV.Note = cmErr.Error()
	}
	f.Variants = append(f.Variants, muxV, Variant{Name: "CallOn(noop), pool connected", Role: "toworker", Stat: summarize(calls, true)},
		Variant{Name: "CallOn(inline noop: agent.Inline), pool connected", Role: "reference", Stat: summarize(inline, true)},
		Variant{Name: "CallOn(noop), the master at GOMAXPROCS 1", Role: "reference", Stat: summarize(oneProc, true)})
	f.addNote(oneProcNote)
	if n := len(calls); n > 0 {
		f.Extra = map[string]any{"master_allocs_per_call": float64(mallocs) / float64(n), "master_bytes_per_call": float64(bytesAlloc) / float64(n)}
		f.addNote(fmt.Sprintf("The master allocates %.0f objects, %.0f bytes per call (runtime.MemStats).", float64(mallocs)/float64(n), float64(bytesAlloc)/float64(n)))
		pc, note := perCall(cpuSnap{}, cpuSum, n)
		f.Extra["cpu_us_per_call"] = pc
		f.addNote(note)
	}
}

// controlMaster starts an ssh ControlMaster to host, with extra -o
// options; stop ends it (by its pid's process group) and waits for it.
func (e *env) controlMaster(host string, opts ...string) (sock string, stop func(), err error) {
	sock = filepath.Join(e.dir, "cm-"+host)
	args := []string{"-F", e.cfg, "-o", "ControlMaster=yes", "-o", "ControlPath=" + sock, "-o", "ControlPersist=no"}
	for _, o := range opts {
		args = append(args, "-o", o)
	}
	cmd := command(e.ctx, "ssh", append(args, "-N", host)...)
	var errb tail
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	stop = func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(sock); err == nil {
			return sock, stop, nil
		}
		select {
		case err := <-done:
			done <- err
			stop()
			return "", nil, fmt.Errorf("ControlMaster exited: %v: %s", err, strings.TrimSpace(errb.String()))
		case <-time.After(10 * time.Millisecond):
		}
	}
	stop()
	return "", nil, errors.New("ControlMaster socket did not appear within 10 s")
}

func (e *env) parallel(f *Figure, pp params) {
	const g = 16
	p, err := e.newPool(remote.PoolConfig{Hosts: []string{"h1"}, MaxPerHost: g})
	if err != nil {
		e.fail(f, "NewPool", err)
		return
	}
	defer p.Close()
	call := func() error { return e.noop(p, "h1") }
	run := func(d time.Duration, maxCalls int64) (int64, time.Duration, error) {
		var n atomic.Int64
		var firstErr error
		var once sync.Once
		var wg sync.WaitGroup
		t0 := time.Now()
		end := t0.Add(d)
		for range g {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(end) && n.Load() < maxCalls && e.ctx.Err() == nil {
					if err := call(); err != nil {
						once.Do(func() { firstErr = err })
						return
					}
					n.Add(1)
				}
			}()
		}
		wg.Wait()
		return n.Load(), time.Since(t0), firstErr
	}
	if _, _, err := run(pp.parDur/2+100*time.Millisecond, 2000); err != nil {
		e.fail(f, "warm-up", err)
		return
	}
	var rates []float64
	c0 := e.cpuSnapshot()
	var calls int64
	for range pp.parRounds {
		n, d, err := run(pp.parDur, 1_000_000)
		calls += n
		if err != nil {
			e.fail(f, "16 goroutines", err)
			break
		}
		rates = append(rates, float64(n)/d.Seconds())
	}
	if calls > 0 {
		pc, note := perCall(c0, e.cpuSnapshot(), int(calls))
		workers, _ := e.agentProcs("worker")
		f.Extra = map[string]any{"cpu_us_per_call": pc, "workers_on_host": len(workers)}
		f.addNote(note)
		f.addNote(fmt.Sprintf("Worker processes on the host after the run: %d (MaxPerHost %d, MinWarm 1).", len(workers), g))
	}
	f.Variants = append(f.Variants, Variant{Name: "16 goroutines × CallOn(noop)", Role: "toworker", Stat: summarize(rates, false)})

	// The same with the no-op registered agent.Inline(): it runs in the
	// boss, so the rate is bounded by the master, sshd and the boss alone.
	call = func() error {
		_, err := remote.CallOn(e.ctx, p, "h1", InlineNoop, struct{}{})
		return err
	}
	var inlineRates []float64
	for range pp.parRounds {
		n, d, err := run(pp.parDur, 1_000_000)
		if err != nil {
			e.fail(f, "16 goroutines, inline", err)
			break
		}
		inlineRates = append(inlineRates, float64(n)/d.Seconds())
	}
	f.Variants = append(f.Variants, Variant{Name: "16 goroutines × CallOn(inline noop: agent.Inline)", Role: "reference", Stat: summarize(inlineRates, false)})
}

// pipeConfig is a PoolConfig's MaxPerHost and Pipeline.
type pipeConfig struct{ mph, pipe int }

func (c pipeConfig) String() string {
	if c.pipe == 0 {
		return fmt.Sprintf("MaxPerHost %d", c.mph)
	}
	return fmt.Sprintf("MaxPerHost %d, Pipeline %d", c.mph, c.pipe)
}

func (e *env) pipelined(f *Figure, pp params) {
	type res struct {
		cfg     pipeConfig
		rates   []float64
		cpu     map[string]float64
		note    string
		workers int
	}
	measure := func(pc pipeConfig) (res, bool) {
		p, err := e.newPool(remote.PoolConfig{Hosts: []string{"h1"}, MaxPerHost: pc.mph, Pipeline: pc.pipe})
		if err != nil {
			e.fail(f, "NewPool", err)
			return res{}, false
		}
		defer p.Close()
		r := res{cfg: pc}
		if _, err := e.window(p, pp.pipeWindow, 2*pp.pipeWindow); err != nil {
			e.fail(f, "warm-up, "+pc.String(), err)
			return res{}, false
		}
		c0 := e.cpuSnapshot()
		for range pp.pipeRounds {
			d, err := e.window(p, pp.pipeWindow, pp.pipeTotal)
			if err != nil {
				e.fail(f, pc.String(), err)
				break
			}
			r.rates = append(r.rates, float64(pp.pipeTotal)/d.Seconds())
		}
		if len(r.rates) > 0 {
			r.cpu, r.note = perCall(c0, e.cpuSnapshot(), len(r.rates)*pp.pipeTotal)
			workers, _ := e.agentProcs("worker")
			r.workers = len(workers)
			r.note += fmt.Sprintf(" Worker processes on the host after the run: %d.", r.workers)
		}
		return r, true
	}
	var all []res
	for _, pc := range pp.pipeConfigs {
		r, ok := measure(pc)
		if !ok {
			return
		}
		all = append(all, r)
	}
	best := -1
	for i, r := range all {
		if st := summarize(r.rates, false); st != nil && (best < 0 || st.Median > summarize(all[best].rates, false).Median) {
			best = i
		}
	}
	var tried []string
	for i, r := range all {
		role := "reference"
		if i == best {
			role = "toworker"
		}
		f.Variants = append(f.Variants, Variant{Name: fmt.Sprintf("Submit/Next, %d in flight, %s (%d workers)", pp.pipeWindow, r.cfg, r.workers), Role: role, Stat: summarize(r.rates, false)})
		tried = append(tried, r.cfg.String())
	}
	// The best configuration again, with this process on one processor.
	if best >= 0 {
		prev := runtime.GOMAXPROCS(1)
		r, ok := measure(all[best].cfg)
		runtime.GOMAXPROCS(prev)
		if ok {
			f.Variants = append(f.Variants, Variant{Name: fmt.Sprintf("Submit/Next, %d in flight, %s, the master at GOMAXPROCS 1", pp.pipeWindow, r.cfg), Role: "reference", Stat: summarize(r.rates, false)})
			f.addNote(oneProcNote)
		}
	}
	// The same no-op registered agent.Inline(): it runs in the boss, so all
	// the calls in flight run at once (MaxPerHost = the window).
	if p, err := e.newPool(remote.PoolConfig{Hosts: []string{"h1"}, MaxPerHost: pp.pipeWindow, MinWarm: -1}); err != nil {
		e.fail(f, "NewPool (inline)", err)
	} else {
		var rates []float64
		if _, err := e.windowOf(p, InlineNoop.Name(), pp.pipeWindow, 2*pp.pipeWindow); err != nil {
			e.fail(f, "warm-up (inline)", err)
		} else {
			for range pp.pipeRounds {
				d, err := e.windowOf(p, InlineNoop.Name(), pp.pipeWindow, pp.pipeTotal)
				if err != nil {
					e.fail(f, "inline", err)
					break
				}
				rates = append(rates, float64(pp.pipeTotal)/d.Seconds())
			}
		}
		p.Close()
		f.Variants = append(f.Variants, Variant{Name: fmt.Sprintf("Submit/Next, %d in flight, inline no-op (agent.Inline), MaxPerHost %d", pp.pipeWindow, pp.pipeWindow), Role: "reference", Stat: summarize(rates, false)})
	}
	if best >= 0 {
		f.Extra = map[string]any{"max_per_host": all[best].cfg.mph, "pipeline": all[best].cfg.pipe, "tried": tried, "cpu_us_per_call": all[best].cpu}
		f.addNote(fmt.Sprintf("%s is used. Each job runs in a worker process; MaxPerHost is how many run on the host at once. Without Pipeline the master sends a call only when a worker is free for it, and the rest of the %d in flight wait in the master's queue; with Pipeline the master keeps MaxPerHost+Pipeline calls sent, and a worker finds its next call already in its socket when it sends a result. Tried %s; the best is reported.", all[best].cfg, pp.pipeWindow, strings.Join(tried, "; ")))
		f.addNote(all[best].note)
	}
}

// window keeps n runs in flight until total have completed, taking results
// with Next in completion order.
func (e *env) window(p *remote.Pool, n, total int) (time.Duration, error) {
	return e.windowOf(p, Noop.Name(), n, total)
}

// windowOf is window for the function fn.
func (e *env) windowOf(p *remote.Pool, fn string, n, total int) (time.Duration, error) {
	t0 := time.Now()
	submitted, done := 0, 0
	for submitted < min(n, total) {
		p.Submit(e.ctx, remote.Job{Host: "h1", Func: fn})
		submitted++
	}
	for done < total {
		r, err := p.Next(e.ctx)
		if err != nil {
			return 0, err
		}
		if _, err := r.Wait(); err != nil {
			return 0, err
		}
		done++
		if submitted < total {
			p.Submit(e.ctx, remote.Job{Host: "h1", Func: fn})
			submitted++
		}
	}
	return time.Since(t0), nil
}

// ---------------------------------------------------------------------------
// Throughput

func (e *env) echoFigure(pp params) {
	f := &Figure{ID: "echo", Section: "throughput", Unit: "MB/s", higher: true,
		Title:  fmt.Sprintf("%d MiB random []byte round trip", pp.echoSize>>20),
		Target: "≥ 0.6 × ssh cat", Checks: []Check{{"ratio", ">=", 0.6}}}
	data := make([]byte, pp.echoSize)
	rand.Read(data)
	p, err := e.newPool(remote.PoolConfig{Hosts: []string{"h1"}, MaxPerHost: 1})
	if err != nil {
		e.fail(f, "NewPool", err)
		e.add(f)
		return
	}
	defer p.Close()
	f.addNote("MB/s is the payload size over the round trip's time (upload and download). ssh cat streams both ways at once; the clock starts once a first byte has come back, so ssh's connection setup is not counted.")
	cpu := cpuSnap{}
	calls := 0
	defer func() {
		if calls > 0 {
			// CPU milliseconds per MiB of payload, by process.
			per := map[string]float64{}
			var parts []string
			mibs := float64(calls) * float64(pp.echoSize) / (1 << 20)
			for _, k := range cpuKinds {
				per[k] = cpu[k] * 1000 / mibs
				parts = append(parts, fmt.Sprintf("%s %.2f", k, per[k]))
			}
			f.Extra = map[string]any{"cpu_ms_per_mib": per}
			f.addNote("CPU per MiB echoed (ms, /proc): " + strings.Join(parts, ", "))
		}
		e.add(f)
	}()
	e.profile("echo", func() {
		e.measure(f, pp.echoRounds, pp.budget, false,
			variantFn{name: "`ssh h1 cat`", role: "baseline", run: func() (float64, error) { return e.sshCat("h1", data) }},
			variantFn{name: "CallOn(echo)", role: "toworker", run: func() (float64, error) {
				c0 := e.cpuSnapshot()
				t0 := time.Now()
				out, err := remote.CallOn(e.ctx, p, "h1", Echo, data)
				d := time.Since(t0)
				c1 := e.cpuSnapshot()
				for k, v := range c1 {
					cpu[k] += v - c0[k]
				}
				calls++
				if err != nil {
					return 0, err
				}
				if !bytes.Equal(out, data) {
					return 0, errors.New("echo returned different bytes")
				}
				return float64(len(data)) / 1e6 / d.Seconds(), nil
			}})
	})
}

// sshCat streams data through `ssh host cat` and reads it back.
func (e *env) sshCat(host string, data []byte) (float64, error) {
	ctx, cancel := context.WithTimeout(e.ctx, 2*time.Minute)
	defer cancel()
	cmd := command(ctx, "ssh", "-F", e.cfg, host, "cat")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return 0, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	var errb tail
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	fail := func(err error) (float64, error) {
		stdin.Close()
		cancel()
		cmd.Wait()
		return 0, fmt.Errorf("ssh %s cat: %w: %s", host, err, strings.TrimSpace(errb.String()))
	}
	buf := make([]byte, len(data))
	if _, err := stdin.Write([]byte{'x'}); err != nil {
		return fail(err)
	}
	if _, err := io.ReadFull(stdout, buf[:1]); err != nil {
		return fail(err)
	}
	t0 := time.Now()
	werr := make(chan error, 1)
	go func() {
		_, err := stdin.Write(data)
		stdin.Close()
		werr <- err
	}()
	_, err = io.ReadFull(stdout, buf)
	d := time.Since(t0)
	if err != nil {
		return fail(err)
	}
	if err := <-werr; err != nil {
		return fail(err)
	}
	if err := cmd.Wait(); err != nil {
		return 0, fmt.Errorf("ssh %s cat: %w: %s", host, err, strings.TrimSpace(errb.String()))
	}
	if !bytes.Equal(buf, data) {
		return 0, errors.New("ssh cat returned different bytes")
	}
	return float64(len(data)) / 1e6 / d.Seconds(), nil
}

// ---------------------------------------------------------------------------
// Fan-out

func (e *env) fanoutFigure(pp params, pdshNote string) {
	n := len(e.hosts)
	f := &Figure{ID: "fanout_cold", Section: "fanout", Unit: "ms",
		Title:  fmt.Sprintf("%d hosts, cold, agents cached: `toworker run -H h[1-%d] -- true`", n, n),
		Target: "≤ 0.6 × bash loop", Checks: []Check{{"ratio", "<=", 0.6}}}
	script := `s=0; pids=; for h in "$@"; do ssh -F "$0" "$h" true & pids="$pids $!"; done; for p in $pids; do wait $p || s=1; done; exit $s`
	bash := variantFn{name: fmt.Sprintf("bash loop of %d `ssh hN true &`, wait", n), role: "baseline", run: func() (float64, error) {
		d, err := e.run(2*time.Minute, nil, "bash", append([]string{"-c", script, e.cfg}, e.hosts...)...)
		return ms(d), err
	}}
	pdsh := variantFn{name: fmt.Sprintf("`pdsh -R ssh -f %d -w h[1-%d] true`", n, n), role: "reference", skip: pdshNote, run: func() (float64, error) {
		d, err := e.run(2*time.Minute, []string{"PDSH_SSH_ARGS=-F " + e.cfg + " %h"}, "pdsh", "-R", "ssh", "-S", "-f", fmt.Sprint(n), "-w", hostRange(n), "true")
		return ms(d), err
	}}
	cli := variantFn{name: fmt.Sprintf("`toworker run -H h[1-%d] -- true`", n), role: "toworker", skip: e.twNote, run: func() (float64, error) {
		d, err := e.cli(2*time.Minute, "run", "-H", hostRange(n), "-F", e.cfg, "--", "true")
		return ms(d), err
	}}
	inproc := variantFn{name: fmt.Sprintf("in process: new Pool of %d + CallOn(noop) on each", n), role: "reference", run: func() (float64, error) {
		d, err := e.coldFanout(e.hosts)
		return ms(d), err
	}}
	// CPU per host, client side and host side, for each variant: what
	// bounds a fan-out on a machine that runs both sides.
	type acc struct {
		client, host, machine float64
		n                     int
	}
	cpu := map[string]*acc{}
	withCPU := func(v variantFn, inProcess bool) variantFn {
		run := v.run
		a := &acc{}
		cpu[v.name] = a
		v.run = func() (float64, error) {
			h0, s0, m0 := e.hostCPU(), selfCPU(), machineCPU()
			x, err := run()
			s1 := selfCPU()
			time.Sleep(150 * time.Millisecond) // let the sessions end and be reaped
			if err == nil {
				a.host += e.hostCPU() - h0
				a.machine += machineCPU() - m0
				if inProcess {
					a.client += s1 - s0
				} else {
					a.client += e.lastChildCPU
				}
				a.n++
			}
			return x, err
		}
		return v
	}
	bash, pdsh, cli, inproc = withCPU(bash, false), withCPU(pdsh, false), withCPU(cli, false), withCPU(inproc, true)
	e.profile("fanout_cold", func() {
		e.measure(f, pp.fanRounds, 2*pp.budget, false, bash, pdsh, cli, inproc)
	})
	per := map[string]map[string]float64{}
	var parts []string
	for _, v := range []variantFn{bash, pdsh, cli, inproc} {
		a := cpu[v.name]
		if a == nil || a.n == 0 {
			continue
		}
		k := float64(a.n * n)
		c, h, m := a.client*1000/k, a.host*1000/k, a.machine*1000/k
		per[v.name] = map[string]float64{"client_ms": c, "host_ms": h, "machine_ms": m}
		parts = append(parts, fmt.Sprintf("%s: client %.1f, host side %.1f, whole machine %.1f", v.name, c, h, m))
	}
	if len(per) > 0 {
		f.Extra = map[string]any{"cpu_ms_per_host": per}
		f.addNote(fmt.Sprintf("CPU per host (ms; client: the command with its children, or the in-process master; host side: sshd, shell and agent processes, from the sshd listeners' reaped children, which misses agents that outlive their session, as the toworker command's do since it no longer waits for them; whole machine: /proc/stat's busy time from the sample's start to 150 ms after its end, everything included): %s. On %d cores both sides share, the whole machine's time bounds the fan-out.", strings.Join(parts, "; "), runtime.NumCPU()))
	}
	if pdshNote == "" {
		f.addNote("pdsh reads our ssh_config through PDSH_SSH_ARGS=\"-F <config> %h\".")
	}
	e.add(f)
}

// ---------------------------------------------------------------------------
// Master memory, boss RSS, gathered warm calls: one pool on every host.

func (e *env) fleetFigures(pp params) {
	n := len(e.hosts)
	extra := 8
	base := n - extra
	if base < 1 {
		base, extra = 1, n-1
	}
	fm := &Figure{ID: "mem_fleet", Section: "resources", Unit: "MiB",
		Title:  fmt.Sprintf("Master memory, %d warm hosts (runtime.MemStats after GC)", n),
		Target: "reported"}
	fh := &Figure{ID: "mem_per_host", Section: "resources", Unit: "KiB",
		Title:  fmt.Sprintf("Master memory per extra idle connected host (%d → %d hosts)", base, base+extra),
		Target: "≤ 200 KiB", Checks: []Check{{"median", "<=", 200}}}
	fg := &Figure{ID: "gather", Section: "fanout", Unit: "ms",
		Title:  fmt.Sprintf("One warm no-op call on all %d connected hosts, gathered", n),
		Target: "median ≤ 2 ms", Checks: []Check{{"median", "<=", 2}}}
	fb := &Figure{ID: "agent_rss", Section: "resources", Unit: "MiB",
		Title: "Agent RSS on the host (VmRSS, idle, one per connected host)", Target: "reported"}
	defer func() { e.add(fm); e.add(fh); e.add(fg); e.add(fb) }()

	memNow := func() runtime.MemStats {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m
	}
	m0 := memNow()
	g0 := runtime.NumGoroutine()
	p, err := e.newPool(remote.PoolConfig{Hosts: e.hosts[:base]})
	if err != nil {
		e.fail(fh, "NewPool", err)
		return
	}
	defer p.Close()
	if err := e.gather(p, e.hosts[:base]); err != nil {
		e.fail(fh, "connect", err)
		return
	}
	time.Sleep(100 * time.Millisecond)
	m1 := memNow()
	g1 := runtime.NumGoroutine()
	if err := e.gather(p, e.hosts[base:base+extra]); err != nil {
		e.fail(fh, "connect more", err)
		return
	}
	time.Sleep(100 * time.Millisecond)
	m2 := memNow()
	g2 := runtime.NumGoroutine()
	if e.prof != "" {
		if out, err := os.Create(filepath.Join(e.prof, "heap_fleet.pprof")); err == nil {
			pprof.Lookup("heap").WriteTo(out, 0)
			out.Close()
		}
	}
	kib := func(a, b uint64) float64 { return (float64(b) - float64(a)) / 1024 / float64(extra) }
	perHeap := kib(m1.HeapInuse, m2.HeapInuse)
	perStack := kib(m1.StackInuse, m2.StackInuse)
	per := perHeap + perStack
	fh.Variants = append(fh.Variants, Variant{Name: "HeapInuse + StackInuse per host", Role: "toworker", Stat: &Stat{N: 1, Min: per, Median: per, Max: per}})
	fh.Extra = map[string]any{"heap_kib_per_host": perHeap, "stack_kib_per_host": perStack, "goroutines_per_host": float64(g2-g1) / float64(extra)}
	fh.addNote(fmt.Sprintf("Per extra host: heap %.0f KiB, goroutine stacks %.0f KiB, %.1f goroutines (each host also keeps one warm worker on its side).", perHeap, perStack, float64(g2-g1)/float64(extra)))
	one := func(v float64) *Stat { return &Stat{N: 1, Min: v, Median: v, Max: v} }
	fm.Variants = append(fm.Variants,
		Variant{Name: "HeapInuse + StackInuse, whole master", Role: "toworker", Stat: one(float64(m2.HeapInuse+m2.StackInuse) / (1 << 20))},
		Variant{Name: "increase over the master without a pool", Role: "reference", Stat: one((float64(m2.HeapInuse+m2.StackInuse) - float64(m0.HeapInuse+m0.StackInuse)) / (1 << 20))},
		Variant{Name: "Sys (from the OS, whole run so far)", Role: "reference", Stat: one(float64(m2.Sys) / (1 << 20))})
	fm.Extra = map[string]any{"goroutines": g2, "goroutines_before_pool": g0}

	// Boss and worker RSS on the hosts while idle.
	_, boss := e.agentProcs("boss")
	_, work := e.agentProcs("worker")
	toMiB := func(v []float64) []float64 {
		out := make([]float64, len(v))
		for i, x := range v {
			out[i] = x / 1024
		}
		return out
	}
	fb.Variants = append(fb.Variants, Variant{Name: "boss (one per connection)", Role: "toworker", Stat: summarize(toMiB(boss), false)},
		Variant{Name: "idle warm worker", Role: "reference", Stat: summarize(toMiB(work), false)})
	if len(boss) < n {
		fb.addNote(fmt.Sprintf("found %d bosses for %d connected hosts.", len(boss), n))
	}

	// Gathered warm call on every host.
	var samples []float64
	for range 20 {
		if err := e.gather(p, e.hosts); err != nil {
			e.fail(fg, "warm-up", err)
			return
		}
	}
	e.profile("gather", func() {
		for range pp.gatherRounds {
			t0 := time.Now()
			if err := e.gather(p, e.hosts); err != nil {
				e.fail(fg, "gather", err)
				return
			}
			samples = append(samples, ms(time.Since(t0)))
		}
	})
	fg.Variants = append(fg.Variants, Variant{Name: fmt.Sprintf("Submit noop × %d, Wait all", n), Role: "toworker", Stat: summarize(samples, true)})
}

// uploadFigure reports the size of what is uploaded to a host on first use.
func (e *env) uploadFigure(twPath string) {
	f := &Figure{ID: "upload", Section: "resources", Unit: "MiB",
		Title: "Agent upload size (gzip -1 of the binary)", Target: "≤ 4 MiB for bin/toworker", Checks: []Check{{"median", "<=", 4}}}
	one := func(v float64) *Stat { return &Stat{N: 1, Min: v, Median: v, Max: v} }
	f.Extra = map[string]any{}
	if twPath != "" {
		if raw, gz, err := gzipSize(twPath); err == nil {
			f.Variants = append(f.Variants, Variant{Name: "bin/toworker (make build: -trimpath -s -w)", Role: "toworker", Stat: one(mib(gz))})
			f.Extra["toworker_bytes"], f.Extra["toworker_gzip_bytes"] = raw, gz
			f.addNote(fmt.Sprintf("bin/toworker is %.1f MiB uncompressed.", mib(raw)))
		}
	}
	if len(f.Variants) == 0 {
		f.Variants = append(f.Variants, Variant{Name: "bin/toworker", Role: "toworker", Note: "not built"})
	}
	if exe, err := os.Executable(); err == nil {
		if raw, gz, err := gzipSize(exe); err == nil {
			f.Variants = append(f.Variants, Variant{Name: "benchlab itself (go run, with symbols)", Role: "reference", Stat: one(mib(gz))})
			f.Extra["benchlab_bytes"], f.Extra["benchlab_gzip_bytes"] = raw, gz
		}
	}
	e.add(f)
}

// ---------------------------------------------------------------------------
// Slow link

func (e *env) slowFigures(pp params) {
	rtt := float64(e.rtt)
	inRTT := func(d time.Duration, tcp bool) float64 {
		v := float64(d) / rtt
		if tcp {
			v++ // TCP's handshake, which the relay does not delay
		}
		return v
	}
	sshSlow := variantFn{name: "`ssh slow1 true`", role: "baseline", run: func() (float64, error) {
		d, err := e.ssh(slowHost, "true")
		return inRTT(d, true), err
	}}
	f := &Figure{ID: "slow_cold", Section: "slow", Unit: "RTT",
		Title:  "Cold: new Pool + first call, agent cached",
		Target: "≤ 8 RTT", Checks: []Check{{"median", "<=", 8}}}
	e.measure(f, pp.slowRounds, 2*pp.budget, false, sshSlow, variantFn{name: "new Pool + CallOn(noop)", role: "toworker", run: func() (float64, error) {
		d, _, err := e.coldPool(slowHost)
		return inRTT(d, true), err
	}}, variantFn{name: "new Pool without Hosts + CallOn(noop): the job opens the connection", role: "reference", run: func() (float64, error) {
		d, _, err := e.coldPoolLazy(slowHost)
		return inRTT(d, true), err
	}}, variantFn{name: "new process: `toworker run -H slow1 -- true`", role: "reference", skip: e.twNote, run: func() (float64, error) {
		d, err := e.cli(60*time.Second, "run", "-H", slowHost, "-F", e.cfg, "--", "true")
		return inRTT(d, true), err
	}})
	f.addNote("Counts include 1 RTT for TCP's handshake, which the relay cannot delay.")
	e.add(f)

	// One traced run of each, for the step table.
	shape, err := e.probeShape()
	if err != nil {
		e.rep.Notes = append(e.rep.Notes, fmt.Sprintf("slow link: the handshake probe failed (%v); step labels are generic", err))
	}
	e.relay.take()
	t0 := time.Now()
	if d, err := e.ssh(slowHost, "true"); err == nil {
		e.addTrace("`ssh slow1 true`", e.relay.take(), shape, false, t0.Add(d))
	}
	t0 = time.Now()
	if d, _, err := e.coldPool(slowHost); err == nil {
		e.addTrace("toworker: new Pool + first call, cached", e.relay.take(), shape, true, t0.Add(d))
	}
	t0 = time.Now()
	if d, _, err := e.coldPoolLazy(slowHost); err == nil {
		e.addTrace("toworker: new Pool without Hosts + first call, cached", e.relay.take(), shape, true, t0.Add(d))
	}

	e.slowMaster(pp, inRTT)

	h1 := e.lab.Servers[0]
	f = &Figure{ID: "slow_first", Section: "slow", Unit: "RTT",
		Title: "First ever call, agent uploaded", Target: "reported"}
	e.measure(f, pp.slowFirst, 2*pp.budget, false, variantFn{name: "new Pool + CallOn(noop), cache removed", role: "toworker", run: func() (float64, error) {
		if err := clearCache(h1.CacheDir); err != nil {
			return 0, err
		}
		d, up, err := e.coldPool(slowHost)
		if err == nil && up != 1 {
			err = fmt.Errorf("expected 1 agent upload, the pool counted %d", up)
		}
		return inRTT(d, true), err
	}})
	exe, _ := os.Executable()
	if _, gz, err := gzipSize(exe); err == nil {
		f.addNote(fmt.Sprintf("Uploads %.1f MiB (benchlab, gzip -1); at this RTT the upload is bounded by the SSH channel window, not the link.", mib(gz)))
	}
	e.add(f)
	e.relay.take()
	if err := clearCache(h1.CacheDir); err == nil {
		t0 := time.Now()
		if d, _, err := e.coldPool(slowHost); err == nil {
			e.addTrace("toworker: first ever call, upload", e.relay.take(), shape, true, t0.Add(d))
		}
	}

	f = &Figure{ID: "slow_warm", Section: "slow", Unit: "RTT",
		Title: "Warm call on a connected pool", Target: "1.0 RTT (pass ≤ 1.1)", Checks: []Check{{"median", "<=", 1.1}}}
	p, err := e.newPool(remote.PoolConfig{Hosts: []string{slowHost}})
	if err != nil {
		e.fail(f, "NewPool", err)
		e.add(f)
		return
	}
	defer p.Close()
	var s []float64
	for i := -3; i < pp.slowWarmCalls; i++ {
		t0 := time.Now()
		if err := e.noop(p, slowHost); err != nil {
			e.fail(f, "CallOn", err)
			break
		}
		if i >= 0 {
			s = append(s, inRTT(time.Since(t0), false))
		}
	}
	f.Variants = append(f.Variants, Variant{Name: "CallOn(noop)", Role: "toworker", Stat: summarize(s, false)})
	e.add(f)
}

// slowMaster measures cold starts through an OpenSSH ControlMaster already
// connected to slow1 (ssh's ControlPath), which sends LC_* as Debian's
// /etc/ssh/ssh_config makes ssh send it.
func (e *env) slowMaster(pp params, inRTT func(time.Duration, bool) float64) {
	f := &Figure{ID: "slow_cold_master", Section: "slow", Unit: "RTT",
		Title: "Cold through a ControlMaster already connected (ControlPath), agent cached", Target: "reported"}
	sock, stop, err := e.controlMaster(slowHost, "SendEnv=LC_*")
	if err != nil {
		e.fail(f, "ssh -M", err)
		e.add(f)
		return
	}
	defer stop()
	viaMaster := "ControlPath=" + sock
	e.measure(f, pp.slowRounds, 2*pp.budget, false, variantFn{name: "`ssh -S SOCKET slow1 true`", role: "baseline", run: func() (float64, error) {
		d, err := e.ssh("-S", sock, slowHost, "true")
		return inRTT(d, false), err
	}}, variantFn{name: "new Pool + CallOn(noop), ControlPath=SOCKET", role: "toworker", run: func() (float64, error) {
		d, _, err := e.coldPoolCfg(slowHost, remote.PoolConfig{Hosts: []string{slowHost}, SSH: remote.SSHOptions{Options: []string{viaMaster}}})
		return inRTT(d, false), err
	}}, variantFn{name: "new process: `toworker run -o ControlPath=SOCKET -H slow1 -- true`", role: "reference", skip: e.twNote, run: func() (float64, error) {
		d, err := e.cli(60*time.Second, "run", "-H", slowHost, "-F", e.cfg, "-o", viaMaster, "--", "true")
		return inRTT(d, false), err
	}})
	f.addNote("No TCP handshake, key exchange or login: the master's connection is up. The master sends LC_* (SendEnv), so toworker's first call travels with the exec in LC_TOWORKER.")
	e.add(f)
}

// addTrace records one traced connection's flights and its step table.
// end is when the result arrived (or the process exited).
func (e *env) addTrace(path string, conns []connTrace, shape traceShape, toworker bool, end time.Time) {
	if len(conns) != 1 {
		e.rep.Notes = append(e.rep.Notes, fmt.Sprintf("trace of %q: expected one connection through the relay, saw %d", path, len(conns)))
		return
	}
	if os.Getenv("BENCHLAB_DEBUG_CHUNKS") != "" {
		for _, c := range conns[0].chunks {
			fmt.Fprintf(os.Stderr, "chunk %s %8.2f RTT up=%v %d\n", path, float64(c.At)/float64(e.rtt)+1, c.Up, c.N)
		}
	}
	fs := flights(conns[0].chunks, e.rtt)
	if e.rep.Flights == nil {
		e.rep.Flights = map[string][]Flight{}
	}
	e.rep.Flights[path] = fs
	e.rep.Steps = append(e.rep.Steps, steps(path, fs, shape, toworker, float64(end.Sub(conns[0].start))/float64(e.rtt))...)
}

// resolveKex returns the KexAlgorithms internal/sshdial resolves for host.
func (e *env) resolveKex(host string) ([]string, error) {
	t, err := sshdial.Resolve(host, sshdial.Options{ConfigFile: e.cfg})
	if err != nil {
		return nil, err
	}
	return t.KexAlgorithms, nil
}
