package agent

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/toworker/toworker/internal/wire"
)

// envFrames returns the master's first frames from the environment variable
// wire.EnvFrames, if the master sent them that way and sshd passed them on,
// and removes the variable, so that no worker or command the agent starts
// sees it. Anything malformed is ignored: the same frames come on stdin.
func envFrames() []byte {
	v, ok := os.LookupEnv(wire.EnvFrames)
	if !ok {
		return nil
	}
	os.Unsetenv(wire.EnvFrames)
	b, err := base64.StdEncoding.DecodeString(v)
	if err != nil || len(b) == 0 || len(b) > wire.MaxEnvFrames {
		return nil
	}
	return b
}

// restoreGOMAXPROCS puts back the login environment's GOMAXPROCS, which
// the bootstrap kept in wire.EnvGOMAXPROCS while it started the boss with
// GOMAXPROCS=1, so that workers and commands run with what the host's
// user set. Without that variable (a boss started some other way) the
// environment is left as it is.
func restoreGOMAXPROCS() {
	v, ok := os.LookupEnv(wire.EnvGOMAXPROCS)
	if !ok {
		return
	}
	os.Unsetenv(wire.EnvGOMAXPROCS)
	if user, set := strings.CutPrefix(v, "="); set {
		os.Setenv("GOMAXPROCS", user)
	} else {
		os.Unsetenv("GOMAXPROCS")
	}
}

// masterInput is the boss's stdin from the master: on first read it
// consumes the master's preamble line ("toworker-master <version> <n>")
// and, when the boss already took the n bytes of frames that follow it
// from the environment (skip), their copy.
type masterInput struct {
	in      *bufio.Reader
	skip    bool
	started bool
	err     error
}

func (m *masterInput) Read(p []byte) (int, error) {
	if !m.started {
		m.started = true
		m.err = m.preamble()
	}
	if m.err != nil {
		return 0, m.err
	}
	return m.in.Read(p)
}

// preamble reads the preamble line and, with skip, the frames after it.
func (m *masterInput) preamble() error {
	line, err := m.in.ReadSlice('\n') // at most the buffer's size
	if err != nil {
		if err == io.EOF && len(line) == 0 {
			return io.EOF
		}
		return fmt.Errorf("boss: read the master's preamble: %w", err)
	}
	n, err := parsePreamble(string(line))
	if err != nil {
		return err
	}
	if m.skip {
		if _, err := m.in.Discard(n); err != nil {
			return fmt.Errorf("boss: skip the master's first frames: %w", err)
		}
	}
	return nil
}

// parsePreamble checks a preamble line and returns its byte count.
func parsePreamble(line string) (int, error) {
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != wire.MasterPreamble {
		return 0, fmt.Errorf("boss: the master's preamble is %.80q, not %q", line, wire.MasterPreamble+" <version> <bytes>")
	}
	if v, err := strconv.Atoi(f[1]); err != nil || v != wire.Version {
		return 0, fmt.Errorf("boss: master protocol %s, agent %d: update one of them", f[1], wire.Version)
	}
	n, err := strconv.Atoi(f[2])
	if err != nil || n < 0 || n > wire.MaxFrame+2*wire.HeaderLen {
		return 0, fmt.Errorf("boss: the master's preamble announces %q bytes of frames", f[2])
	}
	return n, nil
}
