package rawio

import (
	"io"
	"syscall"
	"unsafe"
)

// Conn reads and writes a non-blocking descriptor with raw system calls,
// waiting through the runtime's poller when it would block. Non-blocking
// reads and writes never block the thread, so raw calls are safe here.
type Conn struct {
	rc syscall.RawConn
}

// Read reads once, waiting until the descriptor is readable. It returns
// io.EOF at end of file.
func (c Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var errno syscall.Errno
	err := c.rc.Read(func(fd uintptr) bool {
		for {
			r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
			switch e {
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false
			}
			n, errno = int(r), e
			return true
		}
	})
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

// Write writes all of p, waiting whenever the descriptor is not writable.
func (c Conn) Write(p []byte) (int, error) {
	done := 0
	var errno syscall.Errno
	err := c.rc.Write(func(fd uintptr) bool {
		for done < len(p) {
			r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[done])), uintptr(len(p)-done))
			switch e {
			case 0:
				done += int(r)
			case syscall.EINTR:
			case syscall.EAGAIN:
				return false
			default:
				errno = e
				return true
			}
		}
		return true
	})
	if err == nil && errno != 0 {
		err = errno
	}
	return done, err
}

// New returns how to read and write f, a socket or a non-blocking file the
// runtime polls: a Conn on its descriptor, or f itself if it has none.
func New(f ReadWriteConn) io.ReadWriter {
	if rc, err := f.SyscallConn(); err == nil {
		return Conn{rc}
	}
	return f
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
