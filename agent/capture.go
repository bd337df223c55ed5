package agent

import (
	"os"
	"sync"
	"syscall"

	"github.com/toworker/toworker/internal/rawio"
	"github.com/toworker/toworker/internal/wire"
)

// Worker descriptors, as the boss sets them up: fd 1 and 2 are the write
// ends of two pipes that live as long as the worker, so a job's output, and
// that of every process it starts, lands in them; the read ends are the
// worker's fd 5 and 6.
const (
	workerStdoutFD = 5
	workerStderrFD = 6
)

// capture forwards what lands in the worker's stdout and stderr pipes to
// the boss as output frames of the running job. A read and the frame it
// becomes happen under mu, and flush drains the pipes under mu, so once
// flush returns every byte written before it was called has been sent, ahead
// of the job's result on the same socket.
type capture struct {
	w *wire.Writer

	mu  sync.Mutex // guards job, and each read-and-send
	job uint32     // the running job; 0 between jobs (output is dropped)

	files [2]*os.File
	buf   [2][]byte
	wg    sync.WaitGroup
}

var streamKinds = [2]wire.Kind{wire.KindStdout, wire.KindStderr}

func newCapture(w *wire.Writer) *capture {
	c := &capture{w: w}
	for i, fd := range []int{workerStdoutFD, workerStderrFD} {
		syscall.CloseOnExec(fd)
		if err := syscall.SetNonblock(fd, true); err != nil {
			continue // not given: no capture on this stream
		}
		c.files[i] = os.NewFile(uintptr(fd), streamKinds[i].String())
		c.buf[i] = make([]byte, 32<<10)
	}
	for i, f := range c.files {
		if f == nil {
			continue
		}
		c.wg.Add(1)
		go c.pump(i, f)
	}
	return c
}

// pump waits for output on one stream and forwards it.
func (c *capture) pump(i int, f *os.File) {
	defer c.wg.Done()
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	for {
		done := false
		err := rc.Read(func(fd uintptr) bool {
			c.mu.Lock()
			defer c.mu.Unlock()
			n, err := c.readLocked(i, int(fd))
			if err == syscall.EAGAIN {
				return false // wait until readable
			}
			done = n == 0 || err != nil
			return true
		})
		if err != nil || done {
			return
		}
	}
}

// readLocked reads once from stream i and sends what it got. c.mu is held.
func (c *capture) readLocked(i, fd int) (int, error) {
	n, err := rawio.ReadNonblock(fd, c.buf[i])
	if n > 0 && c.job != 0 {
		c.w.WriteFrame(wire.Frame{Kind: streamKinds[i], Job: c.job, Payload: c.buf[i][:n]})
	}
	return n, err
}

// start attributes output from now on to job.
func (c *capture) start(job uint32) {
	c.mu.Lock()
	c.job = job
	c.mu.Unlock()
}

// finish sends whatever the pipes hold now as the job's, and stops
// attributing output to it.
func (c *capture) finish() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, f := range c.files {
		if f == nil {
			continue
		}
		for {
			n, err := c.readLocked(i, int(f.Fd()))
			if n <= 0 || err != nil {
				break
			}
		}
	}
	c.job = 0
}
