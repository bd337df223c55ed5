package agent

import (
	"os"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// A start gate is a page of memory shared by the boss and one worker, by
// which a call that is cancelled before it starts never starts, and one
// cancelled while it runs is killed with its worker, with nothing else in
// between: the boss writes calls to a busy worker ahead of time
// (pipelining), so it cannot tell from the socket alone whether the worker
// is still on the job before a cancelled call, on it, or already past it.
//
// The page holds the worker's current call (cur) and marks: the ids of the
// calls the boss has cancelled. The worker stores cur = id before it starts
// a call and then looks for id among the marks; the boss marks a cancelled
// id and then tries to swap cur from id to gateKilled. These are sequentially
// consistent atomic operations (a locked instruction on amd64, acquire and
// release on arm64), so at least one side sees the other's store:
//   - the worker sees the mark: it swaps cur back to 0 and skips the call;
//   - the boss's swap succeeds: the call is the worker's current one, which
//     the boss kills with the worker. A worker that then fails to swap cur
//     back to 0 (before skipping, or after the call returns) knows it is
//     being killed and waits for it, starting nothing more;
//   - the swap fails and the mark is not seen: the worker had already moved
//     past the call, which ran to its end.
//
// Job ids come from the master's per-connection counter, from 1; gateKilled
// is never one.
const (
	workerGateFD = 7 // the worker's descriptor of the shared page
	gateKilled   = ^uint32(0)
	gateMarks    = 16   // more than the calls one worker holds (1 + maxQueuedPerWorker)
	gateSize     = 4096 // one page
)

// gate is a mapped start gate.
type gate struct {
	mem []byte
}

// mapGate maps the start gate in f.
func mapGate(f *os.File) (*gate, error) {
	mem, err := syscall.Mmap(int(f.Fd()), 0, gateSize, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return nil, err
	}
	return &gate{mem: mem}, nil
}

// newGateFile returns a new, zeroed start gate as a file to map and to pass
// to a worker.
func newGateFile() (*os.File, error) {
	f, err := sharedMemFile("toworker-gate")
	if err != nil {
		return nil, err
	}
	if err := f.Truncate(gateSize); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func (g *gate) cur() *uint32 { return (*uint32)(unsafe.Pointer(&g.mem[0])) }

func (g *gate) mark(i int) *uint32 { return (*uint32)(unsafe.Pointer(&g.mem[4+4*i])) }

// What the worker does with a call, from begin and end.
type gateVerdict int

const (
	gateRun   gateVerdict = iota // start it (begin), or go on to the next (end)
	gateSkip                     // it was cancelled before it started: report so, go on
	gateDying                    // the boss is killing the worker: start nothing more
)

// begin is the worker's side before it starts call id.
func (g *gate) begin(id uint32) gateVerdict {
	atomic.StoreUint32(g.cur(), id)
	for i := range gateMarks {
		if atomic.LoadUint32(g.mark(i)) == id {
			if atomic.CompareAndSwapUint32(g.cur(), id, 0) {
				return gateSkip
			}
			return gateDying
		}
	}
	return gateRun
}

// end is the worker's side after call id returned.
func (g *gate) end(id uint32) gateVerdict {
	if atomic.CompareAndSwapUint32(g.cur(), id, 0) {
		return gateRun
	}
	return gateDying
}

// cancel is the boss's side for call id: it marks it, and reports whether
// the call is the worker's current one, which the boss must then kill. ok
// is false when no mark was free (the boss then does without the gate).
func (g *gate) cancel(id uint32) (running, ok bool) {
	for i := range gateMarks {
		if atomic.CompareAndSwapUint32(g.mark(i), 0, id) {
			return atomic.CompareAndSwapUint32(g.cur(), id, gateKilled), true
		}
	}
	return false, false
}

// clear forgets the mark of call id, once its result is in.
func (g *gate) clear(id uint32) {
	for i := range gateMarks {
		atomic.CompareAndSwapUint32(g.mark(i), id, 0)
	}
}

func (g *gate) unmap() {
	if g != nil && g.mem != nil {
		syscall.Munmap(g.mem)
		g.mem = nil
	}
}
