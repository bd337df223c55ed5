package agent

import (
	"sync"
	"testing"
)

// testGate maps a new start gate for one test.
func testGate(t *testing.T) *gate {
	t.Helper()
	f, err := newGateFile()
	if err != nil {
		t.Fatalf("no shared memory for a start gate: %v", err)
	}
	defer f.Close() // the mapping stays
	g, err := mapGate(f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.unmap)
	return g
}

// The start gate's two sides, racing: a call the boss finds running is never
// finished or skipped by the worker, which learns it is being killed; a call
// the boss does not find running is never one the worker thinks is being
// killed.
func TestGateCancelRacesWorker(t *testing.T) {
	g := testGate(t)
	counts := map[string]int{}
	for id := uint32(1); id <= 20000; id++ {
		var running, marked bool
		var begin, end gateVerdict = -1, -1
		var wg sync.WaitGroup
		start := make(chan struct{})
		wg.Add(2)
		go func() {
			defer wg.Done()
			<-start
			if begin = g.begin(id); begin == gateRun {
				end = g.end(id)
			}
		}()
		go func() {
			defer wg.Done()
			<-start
			running, marked = g.cancel(id)
		}()
		close(start)
		wg.Wait()
		if !marked {
			t.Fatalf("call %d: no free mark", id)
		}
		dying := begin == gateDying || end == gateDying
		switch {
		case running && !dying:
			t.Fatalf("call %d: the boss kills it as running, but the worker went on (begin %d, end %d)", id, begin, end)
		case !running && dying:
			t.Fatalf("call %d: the worker waits to be killed, but the boss did not find it running", id)
		case running:
			counts["killed"]++
		case begin == gateSkip:
			counts["skipped"]++
		default:
			counts["ran"]++
		}
		// The next call: the boss has read the result (clear); a killed
		// worker is replaced by a new one (a zeroed gate).
		g.clear(id)
		if running {
			*g.cur() = 0
		}
	}
	t.Logf("outcomes: %v", counts)
}

// Marks are freed by clear, so a worker's gate serves any number of calls.
func TestGateMarksAreReused(t *testing.T) {
	g := testGate(t)
	for id := uint32(1); id <= 3*gateMarks; id++ {
		if running, ok := g.cancel(id); !ok || running {
			t.Fatalf("cancel %d: running %v, ok %v; want a free mark, not running", id, running, ok)
		}
		if v := g.begin(id); v != gateSkip {
			t.Fatalf("begin %d after its cancel: %d, want gateSkip", id, v)
		}
		g.clear(id)
	}
	if v := g.begin(99); v != gateRun {
		t.Fatalf("begin of a call never cancelled: %d, want gateRun", v)
	}
	if v := g.end(99); v != gateRun {
		t.Fatalf("end of a call never cancelled: %d, want gateRun", v)
	}
}
