package rawio

import (
	"io"
	"sync"
	"syscall"
	"unsafe"
)

// Conn reads and writes a non-blocking descriptor with raw system calls,
// waiting through the runtime's poller when it would block. Non-blocking
// reads and writes never block the thread, so raw calls are safe here. The
// functions given to the poller are made once, with the state they work on,
// so that a read or write allocates nothing.
type Conn struct {
	rc syscall.RawConn

	rmu    sync.Mutex // one Read at a time; guards the fields below
	rbuf   []byte
	rn     int
	rerrno syscall.Errno
	readFn func(fd uintptr) bool

	wmu     sync.Mutex // one Write at a time; guards the fields below
	wbuf    []byte
	wdone   int
	werrno  syscall.Errno
	writeFn func(fd uintptr) bool
}

// Read reads once, waiting until the descriptor is readable. It returns
// io.EOF at end of file.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.rbuf, c.rn, c.rerrno = p, 0, 0
	err := c.rc.Read(c.readFn)
	n, errno := c.rn, c.rerrno
	c.rbuf = nil
	switch {
	case err != nil:
		return 0, err
	case errno != 0:
		return 0, errno
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (c *Conn) read(fd uintptr) bool {
	p := c.rbuf
	for {
		r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		c.rn, c.rerrno = int(r), e
		return true
	}
}

// Write writes all of p, waiting whenever the descriptor is not writable.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf, c.wdone, c.werrno = p, 0, 0
	err := c.rc.Write(c.writeFn)
	done, errno := c.wdone, c.werrno
	c.wbuf = nil
	if err == nil && errno != 0 {
		err = errno
	}
	return done, err
}

func (c *Conn) write(fd uintptr) bool {
	p := c.wbuf
	for c.wdone < len(p) {
		r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[c.wdone])), uintptr(len(p)-c.wdone))
		switch e {
		case 0:
			c.wdone += int(r)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			c.werrno = e
			return true
		}
	}
	return true
}

// New returns how to read and write f, a socket or a non-blocking file the
// runtime polls: a Conn on its descriptor, or f itself if it has none.
func New(f ReadWriteConn) io.ReadWriter {
	rc, err := f.SyscallConn()
	if err != nil {
		return f
	}
	c := &Conn{rc: rc}
	c.readFn, c.writeFn = c.read, c.write
	return c
}

// ReadNonblock reads a non-blocking descriptor once, with a raw system call.
func ReadNonblock(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		r, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			return -1, e
		}
		return int(r), nil
	}
}
