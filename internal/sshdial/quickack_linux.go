package sshdial

import (
	"io"
	"net"
	"sync/atomic"
	"syscall"

	"github.com/toworker/toworker/internal/rawio"
)

// quickAckReads is how many reads of a new connection ask the kernel to
// acknowledge at once. During the key exchange and authentication sshd has
// not yet set TCP_NODELAY: when it sends two small segments in a row, Nagle's
// algorithm holds the second until the first is acknowledged, and our
// delayed ACK (up to 40 ms) would hold that acknowledgement. Acknowledging
// immediately during the first reads removes the stall; once the session has
// started sshd sets TCP_NODELAY itself and this is no longer needed.
const quickAckReads = 64

// quickAck wraps a TCP connection so that its first reads set TCP_QUICKACK
// (which the kernel clears again after each ACK it sends).
func quickAck(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	return &quickAckConn{TCPConn: tc, raw: raw, io: rawio.New(tc)}
}

// quickAckConn also reads and writes with raw system calls (package
// rawio): a master making sequential calls is idle between them.
type quickAckConn struct {
	*net.TCPConn
	raw   syscall.RawConn
	io    io.ReadWriter
	reads atomic.Int32
}

func (c *quickAckConn) Write(p []byte) (int, error) { return c.io.Write(p) }

func (c *quickAckConn) Read(p []byte) (int, error) {
	if c.reads.Add(1) <= quickAckReads {
		c.raw.Control(func(fd uintptr) {
			syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1)
		})
	}
	return c.io.Read(p)
}
