//go:build !unix

package sshmux

import (
	"context"
	"fmt"
	"runtime"
)

// Open connects to the ControlMaster listening at path and asks it to run
// cmd in a new session. ControlMaster sockets need a Unix system (the
// master receives the session's descriptors over the socket): on this one
// Open always fails.
func Open(ctx context.Context, path, cmd string, env []string) (*Session, error) {
	return nil, fmt.Errorf("sshmux: control socket %s: ControlMaster sockets need a Unix system, not %s", path, runtime.GOOS)
}
