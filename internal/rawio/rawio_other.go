//go:build !linux

package rawio

import (
	"io"
	"syscall"
)

// New returns f itself: raw system calls are used on Linux only.
func New(f ReadWriteConn) io.ReadWriter { return f }

// ReadNonblock reads a non-blocking descriptor once.
func ReadNonblock(fd int, p []byte) (int, error) { return syscall.Read(fd, p) }
