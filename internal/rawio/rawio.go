// Package rawio reads and writes sockets and pipes with raw system calls on
// Linux, for the processes of a call's path that sleep between calls.
//
// A plain syscall.Read or Write enters the Go scheduler's system-call
// state, and in a process whose processors are all idle that wakes the
// runtime's sysmon thread, which then polls every 20 µs until the process is
// idle again. An agent worker starts every job from idle, so that was two of
// its four context switches per call (perf, sched:sched_switch); with raw
// calls a no-op call through a worker costs about a quarter less CPU.
// Only non-blocking descriptors are read or written this way: a raw call
// that blocked would hold its thread.
package rawio

import (
	"io"
	"syscall"
)

// ReadWriteConn is a socket or file that exposes its descriptor.
type ReadWriteConn interface {
	io.ReadWriter
	syscall.Conn
}
