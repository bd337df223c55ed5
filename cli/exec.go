package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/toworker/toworker/internal/hostlist"
	"github.com/toworker/toworker/remote"
)

// Host statuses, in the --json records and the summary.
const (
	statusOK          = "ok"
	statusFailed      = "failed"      // the command or function failed
	statusUnreachable = "unreachable" // connecting, or the connection, failed
	statusTimeout     = "timeout"     // ran past --timeout and was killed
	statusCancelled   = "cancelled"   // interrupted while running
	statusSkipped     = "skipped"     // never started (--max-fail, interrupt)
)

// outcome is what happened on one host.
type outcome struct {
	host     string
	status   string
	exitCode *int
	reason   string // one line; empty when ok
	duration time.Duration
	result   json.RawMessage // call: the function's result
	files    *int            // put/get: files copied
	bytes    *int64          // put/get: bytes copied
}

// task is what a command runs on each host.
type task interface {
	// job returns the job for host; the engine sets Host, OnOutput and
	// OnError.
	job(host string) remote.Job
	// done fills in o from the job's result. It is called for every job
	// that was submitted; classify has already handled the errors common
	// to all tasks (o.status is then no longer statusOK), and left
	// function errors (err is a *remote.RemoteError) to done.
	done(o *outcome, res remote.Result, err error)
}

// engine runs a task on hosts with the job flags' rules: fan-out, batches,
// max-fail, Ctrl-C.
type engine struct {
	name   string // the command, for the summary
	flags  *jobFlags
	hosts  []string
	task   task
	sink   *sink
	stderr io.Writer
	isTTY  bool

	stoppedBy string           // why hosts were left unstarted, for the summary
	stats     remote.HostStats // the pool's totals at the end
}

// run runs the task everywhere and returns the outcomes in host order and
// whether the run was interrupted.
func (e *engine) run(ctx context.Context) ([]*outcome, bool, error) {
	maxFail, err := e.flags.maxFailCount(len(e.hosts))
	if err != nil {
		return nil, false, err
	}
	cfg := e.flags.poolConfig()
	cfg.SSH.Warn = e.sink
	cfg.Logger = slog.New(slog.NewTextHandler(e.sink, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cfg.Stdout, cfg.Stderr = e.sink, e.sink
	pool, err := remote.NewPool(context.WithoutCancel(ctx), cfg)
	if err != nil {
		return nil, false, err
	}

	outs := make([]*outcome, len(e.hosts))
	for i, h := range e.hosts {
		outs[i] = &outcome{host: h, status: statusSkipped, reason: "not started"}
	}
	if e.isTTY && !e.flags.json && !e.flags.noProgress {
		e.sink.startProgress(len(e.hosts), terminalWidth(e.stderr), 200*time.Millisecond)
	}

	fanout := e.flags.fanoutOrDefault()
	batch := e.flags.batch
	if batch <= 0 {
		batch = len(e.hosts)
	}
	index := make(map[*remote.Run]int, len(e.hosts))
	started := make(map[int]time.Time, len(e.hosts))
	inflight, failures := 0, 0
	stopped, interrupted := false, false

	// wait takes one finished run and records it; on Ctrl-C it kills the
	// pool (cancelling every running job on its host) first.
	wait := func() {
		nctx := ctx
		if interrupted {
			nctx = context.Background()
		}
		r, err := pool.Next(nctx)
		if err != nil && ctx.Err() != nil && !interrupted {
			interrupted = true
			e.sink.note("%s: interrupted: cancelling %d running jobs", e.name, inflight)
			pool.Kill()
			r, err = pool.Next(context.Background())
		}
		if err != nil {
			inflight = 0 // ErrNoPending: nothing is in flight after all
			return
		}
		i := index[r]
		res, rerr := r.Wait()
		o := outs[i]
		o.status, o.reason = statusOK, ""
		o.duration = time.Since(started[i])
		classify(o, rerr, e.flags.timeout)
		e.task.done(o, res, rerr)
		if interrupted && o.status != statusOK && o.status != statusFailed {
			o.status, o.reason = statusCancelled, "cancelled (interrupted)"
		}
		inflight--
		e.sink.setRunning(inflight)
		if o.status != statusOK {
			failures++
			if maxFail > 0 && failures >= maxFail {
				stopped = true
			}
		}
		e.sink.hostDone(o)
	}

	for b := 0; b < len(e.hosts) && !stopped && !interrupted; b += batch {
		for i := b; i < min(b+batch, len(e.hosts)); i++ {
			for inflight >= fanout && !interrupted {
				wait()
			}
			if stopped || interrupted {
				break
			}
			if ctx.Err() != nil {
				// Interrupted between runs: stop starting hosts.
				interrupted = true
				e.sink.note("%s: interrupted: cancelling %d running jobs", e.name, inflight)
				pool.Kill()
				break
			}
			host := e.hosts[i]
			job := e.task.job(host)
			job.Host = host
			job.OnOutput = func(l string) { e.sink.line(host, streamOut, l) }
			job.OnError = func(l string) { e.sink.line(host, streamErr, l) }
			started[i] = time.Now()
			run := pool.Submit(ctx, job)
			index[run] = i
			inflight++
			e.sink.setRunning(inflight)
		}
		for inflight > 0 {
			wait()
		}
	}
	for inflight > 0 {
		wait()
	}
	e.stats = pool.Stats().Total
	if interrupted {
		pool.Kill()
	} else {
		pool.Close()
	}
	e.sink.stopProgress()
	if stopped {
		e.stoppedBy = fmt.Sprintf("--max-fail %s reached after %s", e.flags.maxFail, plural(failures, "failed host"))
		for _, o := range outs {
			if o.status == statusSkipped {
				o.reason = "not started: " + e.stoppedBy
			}
		}
	}
	if interrupted {
		for _, o := range outs {
			if o.status == statusSkipped {
				o.reason = "not started: interrupted"
			}
		}
	}
	// Hosts never started still get their JSON record.
	for _, o := range outs {
		if o.status == statusSkipped {
			e.sink.hostDone(o)
		}
	}
	return outs, interrupted, nil
}

// classify fills in o for the errors every task treats alike and reports
// whether it did; a function's own error (*remote.RemoteError of kind
// error, panic, …) is left to the task unless it is a timeout or a
// cancellation.
func classify(o *outcome, err error, timeout time.Duration) bool {
	if err == nil {
		return false
	}
	var fe *remote.FailureError
	var re *remote.RemoteError
	switch {
	case errors.As(err, &fe):
		o.status = statusUnreachable
		o.reason = fe.Op + ": " + oneLine(fe.Err.Error())
	case errors.Is(err, remote.ErrTimeout):
		o.status = statusTimeout
		o.reason = "timed out"
		if timeout > 0 {
			o.reason = fmt.Sprintf("timed out after %v; its processes were killed", timeout)
		}
	case errors.Is(err, remote.ErrClosed) || errors.Is(err, context.Canceled) || (errors.As(err, &re) && re.Kind == remote.KindCanceled):
		o.status = statusCancelled
		o.reason = "cancelled"
	case errors.As(err, &re):
		return false
	default:
		o.status = statusFailed
		o.reason = oneLine(err.Error())
	}
	return true
}

// remoteReason describes a function's own failure in one line.
func remoteReason(err error) string {
	var re *remote.RemoteError
	if !errors.As(err, &re) {
		return oneLine(err.Error())
	}
	switch re.Kind {
	case remote.KindFunc, remote.KindChdir, remote.KindPanic:
		return oneLine(re.Message)
	default:
		return re.Kind + ": " + oneLine(re.Message)
	}
}

// oneLine keeps the first line of s.
func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i] + " …"
	}
	return s
}

// Exit statuses of the toworker command.
const (
	// ExitOK: the command succeeded on every host.
	ExitOK = 0
	// ExitFailed: on some host the command exited non-zero, was killed by
	// a signal, or the function returned an error (or could not run).
	ExitFailed = 1
	// ExitUsage: the command line was wrong, or a local file it names
	// could not be read; nothing was run.
	ExitUsage = 2
	// ExitUnreachable: some host could not be reached (connection,
	// authentication, agent start, or the connection was lost) or its job
	// timed out. It wins over ExitFailed.
	ExitUnreachable = 3
	// ExitInterrupted: interrupted (SIGINT, Ctrl-C); the jobs running
	// were cancelled on their hosts.
	ExitInterrupted = 130
)

// exitStatus computes the command's exit status from the outcomes.
func exitStatus(outs []*outcome, interrupted bool) int {
	if interrupted {
		return ExitInterrupted
	}
	code := ExitOK
	for _, o := range outs {
		switch o.status {
		case statusUnreachable, statusTimeout:
			return ExitUnreachable
		case statusFailed, statusSkipped, statusCancelled:
			code = ExitFailed
		}
	}
	return code
}

// summary writes the end-of-run summary to the sink (stderr).
func (e *engine) summary(outs []*outcome, elapsed time.Duration, quiet bool) {
	counts := map[string]int{}
	for _, o := range outs {
		counts[o.status]++
	}
	if quiet && counts[statusOK] == len(outs) {
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s in %v: %d ok", e.name, plural(len(outs), "host"), elapsed.Round(time.Millisecond), counts[statusOK])
	for _, st := range []string{statusFailed, statusUnreachable, statusTimeout, statusCancelled, statusSkipped} {
		if counts[st] > 0 {
			name := st
			switch st {
			case statusTimeout:
				name = "timed out"
			case statusSkipped:
				name = "not started"
			}
			fmt.Fprintf(&b, ", %d %s", counts[st], name)
		}
	}
	files, bytes := 0, int64(0)
	for _, o := range outs {
		if o.files != nil {
			files += *o.files
		}
		if o.bytes != nil {
			bytes += *o.bytes
		}
	}
	if files > 0 {
		fmt.Fprintf(&b, "; copied %s, %s", plural(files, "file"), sizeString(bytes))
	}
	if e.stats.Uploads > 0 {
		fmt.Fprintf(&b, "; agent uploaded to %s", plural(e.stats.Uploads, "host"))
	}
	if e.stats.Retried > 0 {
		fmt.Fprintf(&b, "; %s", plural(e.stats.Retried, "retry"))
	}
	b.WriteByte('\n')
	// One line per status and reason, the hosts folded.
	type key struct{ status, reason string }
	var keys []key
	hostsOf := map[key][]string{}
	for _, st := range []string{statusFailed, statusUnreachable, statusTimeout, statusCancelled, statusSkipped} {
		for _, o := range outs {
			if o.status != st {
				continue
			}
			k := key{st, o.reason}
			if _, ok := hostsOf[k]; !ok {
				keys = append(keys, k)
			}
			hostsOf[k] = append(hostsOf[k], o.host)
		}
	}
	for _, k := range keys {
		label := k.status
		switch k.status {
		case statusTimeout:
			label = "timed out"
		case statusSkipped:
			label = "not started"
		}
		fmt.Fprintf(&b, "  %-11s %s: %s\n", label, hostlist.Compress(hostsOf[k]), k.reason)
	}
	e.sink.note("%s", b.String())
}

// plural formats a count of things.
func plural(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	if strings.HasSuffix(thing, "y") {
		return fmt.Sprintf("%d %sies", n, thing[:len(thing)-1])
	}
	return fmt.Sprintf("%d %ss", n, thing)
}

// sizeString formats a byte count.
func sizeString(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// writeFailed writes the hosts that did not succeed, one a line.
func writeFailed(path string, outs []*outcome) error {
	var b strings.Builder
	for _, o := range outs {
		if o.status != statusOK {
			b.WriteString(o.host)
			b.WriteByte('\n')
		}
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}
