package agent

import (
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
)

// fdConn is the boss's link to one worker: a Unix stream socket that carries
// frames both ways and, with each job's first frame, the two pipe ends the
// job's stdout and stderr are written to (SCM_RIGHTS).
type fdConn struct {
	c *net.UnixConn

	mu  sync.Mutex // guards fds
	fds []int      // received descriptors, in arrival order; owned by whoever pops them

	oob []byte // owned by Read
}

func newFDConn(f *os.File) (*fdConn, error) {
	nc, err := net.FileConn(f)
	if err != nil {
		return nil, err
	}
	uc, ok := nc.(*net.UnixConn)
	if !ok {
		nc.Close()
		return nil, fmt.Errorf("fd %d is not a unix socket", f.Fd())
	}
	return &fdConn{c: uc, oob: make([]byte, syscall.CmsgSpace(8*4))}, nil
}

// Read reads stream bytes, keeping any descriptors that came with them.
func (c *fdConn) Read(p []byte) (int, error) {
	n, oobn, _, _, err := c.c.ReadMsgUnix(p, c.oob)
	if oobn > 0 {
		msgs, perr := syscall.ParseSocketControlMessage(c.oob[:oobn])
		if perr == nil {
			for _, m := range msgs {
				fds, ferr := syscall.ParseUnixRights(&m)
				if ferr == nil {
					for _, fd := range fds {
						syscall.CloseOnExec(fd)
					}
					c.mu.Lock()
					c.fds = append(c.fds, fds...)
					c.mu.Unlock()
				}
			}
		}
	}
	return n, err
}

// popFDs takes the n oldest received descriptors.
func (c *fdConn) popFDs(n int) ([]int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.fds) < n {
		return nil, false
	}
	fds := append([]int(nil), c.fds[:n]...)
	c.fds = c.fds[n:]
	return fds, true
}

// Write writes stream bytes.
func (c *fdConn) Write(p []byte) (int, error) { return c.c.Write(p) }

// writeWithFiles writes p with files attached to its first byte.
func (c *fdConn) writeWithFiles(p []byte, files ...*os.File) error {
	fds := make([]int, len(files))
	for i, f := range files {
		fds[i] = int(f.Fd())
	}
	n, _, err := c.c.WriteMsgUnix(p, syscall.UnixRights(fds...), nil)
	if err != nil {
		return err
	}
	if n < len(p) {
		_, err = c.c.Write(p[n:])
	}
	return err
}

func (c *fdConn) Close() error {
	c.mu.Lock()
	for _, fd := range c.fds {
		syscall.Close(fd)
	}
	c.fds = nil
	c.mu.Unlock()
	return c.c.Close()
}
