package sshdtest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"
)

const (
	startAttempts  = 5                      // sshd starts tried before giving up
	readyTimeout   = 5 * time.Second        // per start, until the host key is seen
	pollStep       = 10 * time.Millisecond  // step of every polling loop
	closeGrace     = 3 * time.Second        // SIGTERM to SIGKILL in Close
	reapTimeout    = 5 * time.Second        // after SIGKILL, until the process is gone
	restartBackoff = 200 * time.Millisecond // between Restart attempts on a busy port
)

// Server is one running sshd.
type Server struct {
	Name string // host alias in the client config
	Host string // loopback IP it listens on
	Port int    // TCP port it listens on; kept across Restart
	User string // login user
	// Dir is this server's private dir with its host key, sshd_config,
	// authorized_keys and log.
	Dir string
	// CacheDir is the XDG_CACHE_HOME that sessions on this server get (via
	// sshd_config `SetEnv XDG_CACHE_HOME=...`): a fresh dir per server, so
	// that each "host" has its own agent cache. It belongs to User.
	CacheDir string
	HostKey  ssh.PublicKey // the server's ed25519 host key

	configFile, logFile, keyFile, authFile string
	extra                                  []string

	mu      sync.Mutex
	cmd     *exec.Cmd // the listener; nil before the first start
	pid     int       // pid (and pgid) of the last started listener
	running bool      // cmd started and not yet reaped
}

// Addr returns "host:port".
func (s *Server) Addr() string {
	return net.JoinHostPort(s.Host, strconv.Itoa(s.Port))
}

// PID returns the pid of the listening sshd, which is also its process
// group id. After Close or Kill it still returns the pid the process had;
// Restart changes it.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pid
}

// Running reports whether the sshd listener is running (started, and not
// stopped by Close or Kill).
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running
}

// Log returns the contents of sshd's log (its -E file), for test failure
// messages. It covers every start of this server.
func (s *Server) Log() string {
	b, err := os.ReadFile(s.logFile)
	if err != nil {
		return fmt.Sprintf("(sshdtest: cannot read sshd log: %v)", err)
	}
	return string(b)
}

// Close stops sshd: it sends SIGTERM to the listener's process group and to
// the process groups of its per-connection sshd processes, waits up to 3 s,
// then sends SIGKILL to whatever of them is left, and reaps the listener.
// Commands run by sessions are not signalled. Close is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.running {
		return nil
	}
	pgid := s.pid
	// Stop the group so that it cannot fork while we list its children, and
	// so that the children cannot be reaped (and their pids reused) before
	// they are signalled.
	_ = signalGroup(pgid, sigStop)
	handlers := connectionHandlers(pgid)
	for _, h := range handlers {
		_ = signalGroup(h.pid, sigTerm)
	}
	_ = signalGroup(pgid, sigTerm)
	_ = signalGroup(pgid, sigCont)

	deadline := time.Now().Add(closeGrace)
	for time.Now().Before(deadline) {
		if exited(pgid) && allGone(handlers) {
			break
		}
		time.Sleep(pollStep)
	}
	if !exited(pgid) {
		_ = signalGroup(pgid, sigKill)
	}
	for _, h := range handlers {
		// Reparented by now: signal only if the pid is still that process.
		if h.alive() {
			_ = signalGroup(h.pid, sigKill)
		}
	}
	return s.reapLocked()
}

// Kill sends SIGKILL at once to the sshd listener's process group and to
// the process groups of its per-connection sshd processes, and reaps the
// listener: this simulates a host dying. Commands run by sessions are not
// in those groups (sshd starts them under setsid) and are left alone, as
// intended. Kill is idempotent.
func (s *Server) Kill() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.running {
		return nil
	}
	return s.killLocked()
}

// Restart starts sshd again on the same host, port and keys after Kill or
// Close (for "host comes back" tests). It fails if sshd is running.
func (s *Server) Restart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running {
		return fmt.Errorf("sshdtest: %s: sshd is still running (pid %d)", s.Name, s.pid)
	}
	return s.startLocked(false)
}

func (s *Server) killLocked() error {
	pgid := s.pid
	_ = signalGroup(pgid, sigStop)
	for _, h := range connectionHandlers(pgid) {
		// The listener is stopped, so h cannot have been reaped: h.pid is
		// still h.
		_ = signalGroup(h.pid, sigKill)
	}
	_ = signalGroup(pgid, sigKill)
	return s.reapLocked()
}

// reapLocked waits (bounded) for the listener to exit and reaps it.
func (s *Server) reapLocked() error {
	deadline := time.Now().Add(reapTimeout)
	for !exited(s.pid) {
		if time.Now().After(deadline) {
			return fmt.Errorf("sshdtest: %s: sshd (pid %d) did not exit", s.Name, s.pid)
		}
		time.Sleep(pollStep)
	}
	_ = s.cmd.Wait() // exit status of a signalled sshd is not interesting
	s.running = false
	return nil
}

// errExitedEarly reports an sshd that exited before it was ready.
var errExitedEarly = errors.New("sshd exited before it was ready")

// startLocked starts sshd, retrying when it exits early. With pickPort it
// picks a new free port for every attempt (a bind race loses the port);
// otherwise it keeps s.Port and waits a little between attempts.
func (s *Server) startLocked(pickPort bool) error {
	if _, err := os.Stat(SSHDPath); err != nil {
		return ErrNoSSHD
	}
	if os.Geteuid() == 0 {
		// Debian's privilege separation directory; gone after a reboot
		// and absent in containers.
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			return fmt.Errorf("sshdtest: %w", err)
		}
	}
	var lastErr error
	for attempt := 0; attempt < startAttempts; attempt++ {
		if pickPort {
			port, err := freePort(s.Host)
			if err != nil {
				return err
			}
			s.Port = port
		} else if attempt > 0 {
			time.Sleep(restartBackoff)
		}
		if err := writeFile(s.configFile, []byte(s.sshdConfig()), 0o644); err != nil {
			return err
		}
		lastErr = s.spawnLocked()
		if lastErr == nil {
			return nil
		}
		if !errors.Is(lastErr, errExitedEarly) {
			break
		}
		// Tell a bad config from a lost bind race.
		out, err := exec.Command(SSHDPath, "-t", "-f", s.configFile).CombinedOutput()
		if err != nil {
			return fmt.Errorf("sshdtest: %s: invalid sshd config %s: %v: %s",
				s.Name, s.configFile, err, strings.TrimSpace(string(out)))
		}
	}
	return fmt.Errorf("sshdtest: %s: starting sshd on %s: %w\nsshd log:\n%s", s.Name, s.Addr(), lastErr, s.Log())
}

// spawnLocked starts one sshd process and waits until it serves our host
// key on s.Addr().
func (s *Server) spawnLocked() error {
	logf, err := os.OpenFile(s.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("sshdtest: %w", err)
	}
	cmd := exec.Command(SSHDPath, "-D", "-E", s.logFile, "-f", s.configFile)
	// What sshd prints before it opens its -E file (bad options) lands in
	// the log too; *os.File needs no copying goroutine.
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = sysProcAttr()
	err = cmd.Start()
	logf.Close()
	if err != nil {
		return fmt.Errorf("sshdtest: starting %s: %w", SSHDPath, err)
	}
	s.cmd, s.pid, s.running = cmd, cmd.Process.Pid, true

	deadline := time.Now().Add(readyTimeout)
	for time.Now().Before(deadline) {
		if exited(s.pid) {
			s.reapLocked()
			return fmt.Errorf("%w (%v)", errExitedEarly, cmd.ProcessState)
		}
		if s.serving(time.Until(deadline)) {
			return nil
		}
		time.Sleep(pollStep)
	}
	s.killLocked()
	return fmt.Errorf("sshdtest: %s: sshd on %s not ready after %v", s.Name, s.Addr(), readyTimeout)
}

// serving reports whether s.Addr() speaks SSH ("SSH-2.0-" banner) with our
// host key: only then is it our sshd and not another process that won the
// port.
func (s *Server) serving(budget time.Duration) bool {
	if budget > time.Second {
		budget = time.Second
	}
	if budget <= 0 {
		return false
	}
	conn, err := net.DialTimeout("tcp", s.Addr(), budget)
	if err != nil {
		return false
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(budget))
	var ours atomic.Bool // set from the handshake's goroutine
	_, _, _, _ = ssh.NewClientConn(conn, s.Addr(), &ssh.ClientConfig{
		User:              "sshdtest-probe",
		HostKeyAlgorithms: []string{ssh.KeyAlgoED25519},
		HostKeyCallback: func(_ string, _ net.Addr, key ssh.PublicKey) error {
			ours.Store(string(key.Marshal()) == string(s.HostKey.Marshal()))
			return errors.New("sshdtest: probe done")
		},
	})
	return ours.Load()
}

// freePort returns a TCP port that is free on host right now.
func freePort(host string) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("sshdtest: finding a free port on %s: %w", host, err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// sshdConfig renders this server's sshd_config.
func (s *Server) sshdConfig() string {
	type kv struct{ k, v string }
	defaults := []kv{
		{"ListenAddress", s.Addr()},
		{"HostKey", quote(s.keyFile)},
		{"PidFile", "none"},
		{"AuthorizedKeysFile", quote(s.authFile)},
		{"StrictModes", "no"},
		{"UsePAM", "no"},
		{"PasswordAuthentication", "no"},
		{"KbdInteractiveAuthentication", "no"},
		{"PubkeyAuthentication", "yes"},
		{"PermitRootLogin", "prohibit-password"},
		{"KexAlgorithms", "curve25519-sha256"},
		{"LogLevel", "VERBOSE"},
		{"SetEnv", quote("XDG_CACHE_HOME=" + s.CacheDir)},
		{"MaxSessions", "64"},
		{"MaxStartups", "200"},
		{"Subsystem", "sftp internal-sftp"},
		{"PermitUserRC", "no"},
		{"PrintMotd", "no"},
		{"PrintLastLog", "no"},
	}
	// sshd keeps the first value of most keywords: let ExtraConfig's
	// top-level lines override our defaults.
	override := map[string]bool{}
	var extraEnv []string
	for _, line := range s.extra {
		fields := strings.Fields(line)
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		k := strings.ToLower(fields[0])
		// The arguments, quotes kept; "Keyword=value" is valid too.
		rest := strings.TrimSpace(strings.TrimSpace(line)[len(fields[0]):])
		if i := strings.IndexByte(k, '='); i >= 0 {
			rest = strings.TrimSpace(fields[0][i+1:] + " " + rest)
			k = k[:i]
		}
		if k == "match" {
			break
		}
		switch k {
		case "listenaddress", "hostkey":
		case "setenv":
			if rest != "" {
				extraEnv = append(extraEnv, rest)
			}
		case "subsystem":
			if f := strings.Fields(rest); len(f) > 0 {
				override["subsystem "+f[0]] = true
			}
		default:
			override[k] = true
		}
	}
	var b strings.Builder
	b.WriteString("# Written by sshdtest: for tests, demos and benchmarks only.\n")
	for _, d := range defaults {
		k := strings.ToLower(d.k)
		switch {
		case k == "subsystem" && override["subsystem "+strings.Fields(d.v)[0]]:
			continue
		case k == "setenv" && len(extraEnv) > 0:
			d.v += " " + strings.Join(extraEnv, " ")
		case override[k]:
			continue
		}
		fmt.Fprintf(&b, "%s %s\n", d.k, d.v)
	}
	for _, line := range s.extra {
		b.WriteString(line)
		b.WriteString("\n")
	}
	return b.String()
}
