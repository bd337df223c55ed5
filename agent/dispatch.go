package agent

import (
	"bytes"
	"errors"
	"slices"

	"github.com/toworker/toworker/internal/wire"
)

// The boss's dispatch of calls: to an idle worker, to a new one, queued on
// a busy one (pipelining, with hello.MaxWorkers), or kept in order in the
// boss until a worker can take them.

// routeCall sends a call frame to the job's worker, assigning one on its
// first frame, or starts an Inline call, which keeps f's payload (kept).
// With batch, a new call's frame may be kept back (deferLocked) and its
// worker added to *batch, for the caller to flush.
func (b *boss) routeCall(f wire.Frame, batch *[]*bworker) (kept bool, err error) {
	b.mu.Lock()
	if j := b.jobs[f.Job]; j != nil {
		w := j.w
		j.complete = !f.More
		if w == nil || w.job != j {
			// Not started yet: keep a copy for whichever worker runs it.
			j.held = append(j.held, cloneFrame(f))
		}
		if w == nil {
			ds := b.dispatchLocked()
			b.mu.Unlock()
			b.deliver(ds)
			return false, nil
		}
		b.mu.Unlock()
		w.send(sendItem{frame: f})
		return false, nil
	}
	if b.stopping {
		b.mu.Unlock()
		return false, errors.New("agent is stopping")
	}
	b.mu.Unlock()
	call, e, isInline := inlineCall(f)
	b.mu.Lock()
	if isInline {
		if b.stopping {
			b.mu.Unlock()
			return false, errors.New("agent is stopping")
		}
		if b.hello.MaxWorkers <= 0 || (len(b.queue) == 0 && b.slotFreeLocked()) {
			ij := b.startInlineLocked(f.Job)
			b.mu.Unlock()
			b.runInline(ij, call, e)
			return true, nil
		}
		// MaxWorkers jobs run (with Pipeline, the master sends more):
		// wait in order, from a copy, since call refers to f.
		j := &bjob{id: f.Job, complete: true, held: []wire.Frame{cloneFrame(f)}, inline: e}
		v, err := wire.Decode(f.Kind, j.held[0].Payload)
		if err != nil {
			b.mu.Unlock()
			return false, err
		}
		j.call = v.(*wire.Call)
		b.jobs[f.Job] = j
		b.queue = append(b.queue, j)
		b.mu.Unlock()
		return false, nil
	}
	j := &bjob{id: f.Job, complete: !f.More}
	b.jobs[f.Job] = j
	if len(b.queue) > 0 {
		// Calls wait their turn behind those already waiting.
		j.held = []wire.Frame{cloneFrame(f)}
		b.queue = append(b.queue, j)
		ds := b.dispatchLocked()
		b.mu.Unlock()
		b.deliver(ds)
		return false, nil
	}
	w, running, err := b.placeLocked(pipelineSize(j.complete, []wire.Frame{f}))
	switch {
	case err != nil:
		delete(b.jobs, f.Job)
		b.mu.Unlock()
		return false, err
	case w == nil:
		j.held = []wire.Frame{cloneFrame(f)}
		b.queue = append(b.queue, j)
		b.mu.Unlock()
		return false, nil
	case !running:
		j.held = []wire.Frame{cloneFrame(f)}
	}
	b.assignLocked(j, w, running)
	// Taken before b.mu is let go, so that the socket gets its calls in
	// the order they were assigned (see deliver).
	w.sendMu.Lock()
	b.mu.Unlock()
	if batch != nil && len(f.Payload) <= maxPipelined {
		w.deferLocked(f)
		if !slices.Contains(*batch, w) {
			*batch = append(*batch, w)
		}
	} else {
		w.sendLocked(sendItem{frame: f})
	}
	w.sendMu.Unlock()
	return false, nil
}

// Bounds on the calls queued on one busy worker. A call of at most
// maxPipelined bytes may be queued there while fewer than maxQueuedPerWorker
// calls, of at most maxQueuedBytes together, are: well within a Unix
// socket's buffer, so writing them never waits for the worker to finish its
// job. Several calls let the worker read, and the boss read back, more than
// one at a time; each one more is a call that may wait behind a long one.
const (
	maxPipelined       = 16 << 10
	maxQueuedPerWorker = 8
	maxQueuedBytes     = 64 << 10
)

// placeLocked picks the worker for a call: an idle one, else a new one
// while fewer than hello.MaxWorkers run (running is then true); else, when
// the call may be queued on a worker (size >= 0, see pipelineSize), the
// busy worker with the fewest calls queued that has room for it. It returns
// nil when the call must wait in b.queue. b.mu is held.
func (b *boss) placeLocked(size int) (w *bworker, running bool, err error) {
	free := b.slotFreeLocked()
	if n := len(b.idle); n > 0 && free {
		w = b.idle[n-1]
		b.idle = b.idle[:n-1]
		return w, true, nil
	}
	if b.hello.MaxWorkers <= 0 || (len(b.workers) < b.hello.MaxWorkers && free) {
		w, err = b.spawnLocked()
		return w, true, err
	}
	if size < 0 {
		return nil, false, nil
	}
	max := b.hello.MaxJobsPerWorker
	for c := range b.workers {
		if c.job != nil && len(c.queued) < maxQueuedPerWorker && c.queuedBytes+size <= maxQueuedBytes &&
			!c.retired && !c.job.canceled && (max <= 0 || c.jobs < max) &&
			(w == nil || len(c.queued) < len(w.queued)) {
			w = c
		}
	}
	return w, false, nil
}

// slotFreeLocked reports whether one more job may start: fewer than
// hello.MaxWorkers run, counting workers that are not idle (those retiring
// included, until reaped) and Inline calls. Always true without
// MaxWorkers, when the master sends no more than that. b.mu is held.
func (b *boss) slotFreeLocked() bool {
	max := b.hello.MaxWorkers
	return max <= 0 || len(b.workers)-len(b.idle)+len(b.inline) < max
}

// assignLocked gives j to w, to run now or next. b.mu is held.
func (b *boss) assignLocked(j *bjob, w *bworker, running bool) {
	j.w = w
	w.jobs++
	if running {
		w.job = j
		j.held = nil
	} else {
		w.queued = append(w.queued, j)
		w.queuedBytes += j.size()
	}
}

// delivery is the frames of calls assigned to one worker, written by
// deliver. The assigning goroutine holds w.sendMu from the assignment on,
// so that calls reach a worker's socket in the order they were assigned.
type delivery struct {
	w      *bworker
	frames []wire.Frame
	fail   *bjob // or a queued call that cannot start: reported failed
	err    error
	inline *inlineJob // or an Inline call to run, registered as running
	call   *bjob      // inline's
}

// dispatchLocked assigns the calls waiting in b.queue, in order, to the
// workers that can take them. b.mu is held; the caller passes the result to
// deliver once it has let b.mu go.
func (b *boss) dispatchLocked() []delivery {
	var ds []delivery
	for len(b.queue) > 0 && !b.stopping {
		j := b.queue[0]
		if !j.complete {
			break // its frames are still arriving, and go to the queue
		}
		if j.inline != nil {
			if !b.slotFreeLocked() {
				break
			}
			b.queue[0] = nil
			b.queue = b.queue[1:]
			delete(b.jobs, j.id)
			ds = append(ds, delivery{inline: b.startInlineLocked(j.id), call: j})
			continue
		}
		w, running, err := b.placeLocked(pipelineSize(true, j.held))
		if err == nil && w == nil {
			break
		}
		b.queue[0] = nil
		b.queue = b.queue[1:]
		if err != nil {
			delete(b.jobs, j.id)
			ds = append(ds, delivery{fail: j, err: err})
			continue
		}
		frames := j.held
		b.assignLocked(j, w, running)
		i := slices.IndexFunc(ds, func(d delivery) bool { return d.w == w })
		if i < 0 {
			w.sendMu.Lock()
			ds = append(ds, delivery{w: w})
			i = len(ds) - 1
		}
		ds[i].frames = append(ds[i].frames, frames...)
	}
	return ds
}

// deliver writes what dispatchLocked assigned, and reports the calls that
// could not start. b.mu is not held.
func (b *boss) deliver(ds []delivery) {
	for _, d := range ds {
		if d.inline != nil {
			b.runInline(d.inline, d.call.call, d.call.inline)
			continue
		}
		if d.fail != nil {
			b.fail(d.fail.id, &wire.Error{Kind: wire.ErrKindAgent, Message: d.err.Error()})
			continue
		}
		for _, f := range d.frames {
			d.w.sendLocked(sendItem{frame: f})
		}
		d.w.sendMu.Unlock()
	}
}

// pipelineSize is the size of a call that may be queued on a busy worker:
// complete, in one frame of at most maxPipelined bytes; otherwise -1.
func pipelineSize(complete bool, frames []wire.Frame) int {
	if !complete || len(frames) != 1 || len(frames[0].Payload) > maxPipelined {
		return -1
	}
	return len(frames[0].Payload)
}

// size is the payload size of a call kept in held.
func (j *bjob) size() int {
	n := 0
	for _, f := range j.held {
		n += len(f.Payload)
	}
	return n
}

func cloneFrame(f wire.Frame) wire.Frame {
	f.Payload = bytes.Clone(f.Payload)
	return f
}
