//go:build !unix

package sshmux

import (
	"context"
	"fmt"
	"net"
	"runtime"
)

// Open connects to the ControlMaster listening at path and asks it to run
// cmd in a new session. ControlMaster sockets need a Unix system (the
// master receives the session's descriptors over the socket): on this one
// Open always fails.
func Open(ctx context.Context, path, cmd string, env []string) (*Session, error) {
	return nil, fmt.Errorf("sshmux: control socket %s: ControlMaster sockets need a Unix system, not %s", path, runtime.GOOS)
}

// Forward connects to the ControlMaster listening at path and asks it for
// a connection to host:port. ControlMaster sockets need a Unix system: on
// this one Forward always fails.
func Forward(ctx context.Context, path, host string, port int) (net.Conn, error) {
	return nil, fmt.Errorf("sshmux: control socket %s: ControlMaster sockets need a Unix system, not %s", path, runtime.GOOS)
}
