// Package sshdtest starts real OpenSSH sshd processes on loopback addresses
// and writes a matching client-side ssh_config and known_hosts, so that both
// OpenSSH's `ssh -F` and Go SSH clients can log in to them.
//
// It is for tests, demos and benchmarks only; never use it in production.
// Every key it uses (host keys and the client identity) is generated in
// memory at start time and written into a throw-away temporary directory;
// the servers accept any login as the configured user with that identity.
//
// The helper needs Linux and /usr/sbin/sshd (Debian package
// openssh-server). Run as root it can log in as any local user; run as
// another user it can only log in as that same user.
//
// Notes on behaviour:
//
//   - Each server's sshd is started in its own process group. Close and Kill
//     signal that group and the per-connection sshd processes (which sshd
//     moves into sessions of their own), but not the commands that sessions
//     run: sshd starts those under setsid, so they may outlive a Kill, as
//     they would when a real host's sshd dies.
//   - OpenSSH's ssh finds ~/.ssh through the password database, not $HOME,
//     so Lab.HomeDir only helps clients that honour $HOME (such as Go code
//     reading ~/.ssh/config); use Lab.SSHArgs with OpenSSH's ssh.
//   - sshd runs ~/.ssh/rc never (PermitUserRC no), but it does run the
//     system-wide /etc/ssh/sshrc if that file exists; Debian ships none.
//   - The sshd listener is started with a parent-death signal (SIGTERM), so
//     it stops if the test binary dies without calling Close. (Strictly the
//     kernel sends it when the OS thread that started sshd exits; Go keeps
//     its threads unless a goroutine exits while locked to one with
//     runtime.LockOSThread, so do not start labs from such goroutines.)
package sshdtest

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// SSHDPath is the sshd binary this package runs.
const SSHDPath = "/usr/sbin/sshd"

// ErrNoSSHD is returned when SSHDPath does not exist.
var ErrNoSSHD = errors.New("sshd not found: run `make setup` (apt-get install openssh-server)")

// Options configure one sshd.
type Options struct {
	// Name is the host alias written to the client config; default "h1"
	// (in Lab.AddServer: "h<n>" where n is the new server's 1-based index).
	Name string
	// Host is the loopback IP to listen on; it must be in 127.0.0.0/8.
	// Default "127.0.0.1".
	Host string
	// User is the login user; default: the current user (root in CI).
	// Logging in as another user needs root.
	User string
	// LoginShell, if set, is made the login shell of User, but only when
	// User is a throwaway user created by EnsureUser (its GECOS field is
	// ThrowawayMarker); for any other user, root included, it is ignored.
	LoginShell string
	// ExtraConfig holds extra sshd_config lines appended verbatim. Because
	// sshd keeps the first value it reads for most keywords, a default of
	// this package is left out when a line before the first Match line sets
	// the same keyword (except ListenAddress and HostKey, which add up;
	// SetEnv values are merged into this package's SetEnv line, whose
	// XDG_CACHE_HOME wins; a Subsystem line replaces only the same-named
	// subsystem).
	ExtraConfig []string
}

// LabOptions configure a Lab.
type LabOptions struct {
	// Hosts is the number of servers; default 1 (when 0). A negative value
	// starts no server; add them with Lab.AddServer.
	Hosts int
	// BaseIP is the prefix of the servers' addresses; default "127.0.1.":
	// server i (1-based) listens on BaseIP+i and gets the alias "h<i>".
	BaseIP string
	// ExtraConfig holds sshd_config lines for every server (see
	// Options.ExtraConfig).
	ExtraConfig []string
}

// Lab is N servers plus one client config.
type Lab struct {
	Dir            string // temp dir owning everything
	ConfigFile     string // client ssh_config with one Host block per server
	KnownHostsFile string // known_hosts with every server's host key, as "[ip]:port keytype base64"
	IdentityFile   string // client ed25519 private key (OpenSSH format, mode 0600), its .pub beside it
	// HomeDir is a fake home directory holding .ssh/config (a copy of
	// ConfigFile), .ssh/known_hosts and .ssh/id_ed25519(.pub), so a test can
	// set HOME=HomeDir and exercise "reads ~/.ssh/config like ssh does".
	HomeDir string
	Servers []*Server // the servers, in the order they were added

	extra  []string
	signer ssh.Signer

	mu     sync.Mutex // guards Servers (appends), file writes and closed
	closed bool
}

// StartLab starts opts.Hosts servers and writes the client files. On error
// everything already started is stopped and removed again.
func StartLab(opts LabOptions) (*Lab, error) {
	if runtime.GOOS != "linux" {
		return nil, fmt.Errorf("sshdtest: needs linux, not %s", runtime.GOOS)
	}
	if _, err := os.Stat(SSHDPath); err != nil {
		return nil, ErrNoSSHD
	}
	n := opts.Hosts
	if n == 0 {
		n = 1
	}
	if n < 0 {
		n = 0
	}
	base := opts.BaseIP
	if base == "" {
		base = "127.0.1."
	}
	if n > 254 {
		return nil, fmt.Errorf("sshdtest: %d hosts is too many (at most 254)", n)
	}

	dir, err := os.MkdirTemp("", "sshdtest")
	if err != nil {
		return nil, fmt.Errorf("sshdtest: %w", err)
	}
	l := &Lab{
		Dir:            dir,
		ConfigFile:     filepath.Join(dir, "ssh_config"),
		KnownHostsFile: filepath.Join(dir, "known_hosts"),
		IdentityFile:   filepath.Join(dir, "id_ed25519"),
		HomeDir:        filepath.Join(dir, "home"),
		extra:          append([]string(nil), opts.ExtraConfig...),
	}
	if err := l.init(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}

	// Prepare all servers first (cheap, sequential, fixes the order), then
	// start their sshd processes in parallel.
	servers := make([]*Server, n)
	for i := range servers {
		s, err := l.newServer(Options{
			Name: "h" + strconv.Itoa(i+1),
			Host: base + strconv.Itoa(i+1),
		})
		if err != nil {
			l.Close()
			return nil, err
		}
		servers[i] = s
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.mu.Lock()
			defer s.mu.Unlock()
			errs[i] = s.startLocked(true)
		}()
	}
	wg.Wait()
	l.mu.Lock()
	l.Servers = servers
	l.mu.Unlock()
	if err := errors.Join(errs...); err != nil {
		l.Close()
		return nil, err
	}
	if err := l.writeClientFiles(); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// NewLab is StartLab plus tb.Cleanup(l.Close). It fails the test with a
// clear message on error, and skips it only when not on Linux.
func NewLab(tb testing.TB, opts LabOptions) *Lab {
	tb.Helper()
	if runtime.GOOS != "linux" {
		tb.Skipf("sshdtest: needs linux (running real sshd), not %s", runtime.GOOS)
	}
	l, err := StartLab(opts)
	if err != nil {
		tb.Fatalf("sshdtest: starting lab of sshd servers: %v", err)
	}
	tb.Cleanup(func() {
		if err := l.Close(); err != nil {
			tb.Errorf("sshdtest: closing lab: %v", err)
		}
	})
	return l
}

// init makes the lab directory usable and writes the client identity.
func (l *Lab) init() error {
	// Other users (a login user that is not the current one) must be able
	// to traverse to their authorized_keys file; everything secret is
	// mode 0600 anyway.
	if err := os.Chmod(l.Dir, 0o711); err != nil {
		return fmt.Errorf("sshdtest: %w", err)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return fmt.Errorf("sshdtest: generating client key: %w", err)
	}
	privPEM, pubLine, err := marshalKey(priv, "sshdtest-client")
	if err != nil {
		return err
	}
	l.signer, err = ssh.NewSignerFromKey(priv)
	if err != nil {
		return fmt.Errorf("sshdtest: %w", err)
	}
	sshDir := filepath.Join(l.HomeDir, ".ssh")
	if err := os.MkdirAll(sshDir, 0o700); err != nil {
		return fmt.Errorf("sshdtest: %w", err)
	}
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{l.IdentityFile, privPEM, 0o600},
		{l.IdentityFile + ".pub", pubLine, 0o644},
		{filepath.Join(sshDir, "id_ed25519"), privPEM, 0o600},
		{filepath.Join(sshDir, "id_ed25519.pub"), pubLine, 0o644},
	} {
		if err := writeFile(f.path, f.data, f.mode); err != nil {
			return err
		}
	}
	return nil
}

// AddServer starts one more server in the lab and rewrites the client files
// (ConfigFile, KnownHostsFile and HomeDir/.ssh). The lab's ExtraConfig comes
// before opts.ExtraConfig. Defaults: Name "h<n>" with n the new server's
// 1-based index, Host "127.0.0.1".
func (l *Lab) AddServer(opts Options) (*Server, error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, errors.New("sshdtest: lab is closed")
	}
	if opts.Name == "" {
		opts.Name = "h" + strconv.Itoa(len(l.Servers)+1)
	}
	for _, s := range l.Servers {
		if s.Name == opts.Name {
			l.mu.Unlock()
			return nil, fmt.Errorf("sshdtest: a server named %q exists already", opts.Name)
		}
	}
	l.mu.Unlock()

	s, err := l.newServer(opts)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	err = s.startLocked(true)
	s.mu.Unlock()
	if err != nil {
		os.RemoveAll(s.Dir)
		return nil, err
	}
	l.mu.Lock()
	l.Servers = append(l.Servers, s)
	l.mu.Unlock()
	if err := l.writeClientFiles(); err != nil {
		return s, err
	}
	return s, nil
}

// Close closes every server and removes Dir. It is idempotent.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	servers := append([]*Server(nil), l.Servers...)
	l.mu.Unlock()

	errs := make([]error, len(servers))
	var wg sync.WaitGroup
	for i, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.Close()
		}()
	}
	wg.Wait()
	if err := os.RemoveAll(l.Dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Connections counts the connections the lab's servers are handling now
// (their per-connection sshd processes): benchmarks wait for the count to
// fall back before timing the next sample, so that one sample's teardown
// does not run during the next.
func (l *Lab) Connections() int {
	l.mu.Lock()
	servers := append([]*Server(nil), l.Servers...)
	l.mu.Unlock()
	listeners := make(map[int]bool, len(servers))
	for _, s := range servers {
		if pid := s.PID(); pid > 0 {
			listeners[pid] = true
		}
	}
	return countConnectionHandlers(listeners)
}

// Connections returns how many client connections s's sshd is handling
// now (as Lab.Connections, for this server alone).
func (s *Server) Connections() int {
	pid := s.PID()
	if pid <= 0 {
		return 0
	}
	return countConnectionHandlers(map[int]bool{pid: true})
}

// Server returns the server with the given alias, or nil.
func (l *Lab) Server(name string) *Server {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.Servers {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// SSHArgs returns the arguments that make OpenSSH's ssh use the lab's
// client config: ["-F", ConfigFile].
func (l *Lab) SSHArgs() []string {
	return []string{"-F", l.ConfigFile}
}

// Command returns an *exec.Cmd running OpenSSH's ssh with SSHArgs against
// the host alias name, running remote (if any) there.
func (l *Lab) Command(name string, remote ...string) *exec.Cmd {
	args := append(l.SSHArgs(), name)
	if len(remote) > 0 {
		args = append(args, "--")
		args = append(args, remote...)
	}
	return exec.Command("ssh", args...)
}

// Signer returns the client identity (the key in IdentityFile).
func (l *Lab) Signer() ssh.Signer { return l.signer }

// ClientConfig returns a golang.org/x/crypto/ssh client config for the
// server with alias name: its user, the lab identity, and a host key check
// against KnownHostsFile.
func (l *Lab) ClientConfig(name string) (*ssh.ClientConfig, error) {
	s := l.Server(name)
	if s == nil {
		return nil, fmt.Errorf("sshdtest: no server named %q", name)
	}
	hk, err := knownhosts.New(l.KnownHostsFile)
	if err != nil {
		return nil, fmt.Errorf("sshdtest: %w", err)
	}
	return &ssh.ClientConfig{
		User:              s.User,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(l.signer)},
		HostKeyCallback:   hk,
		HostKeyAlgorithms: []string{ssh.KeyAlgoED25519},
		Timeout:           10 * time.Second,
	}, nil
}

// Dial connects a golang.org/x/crypto/ssh client to the server with alias
// name, using ClientConfig.
func (l *Lab) Dial(name string) (*ssh.Client, error) {
	cfg, err := l.ClientConfig(name)
	if err != nil {
		return nil, err
	}
	return ssh.Dial("tcp", l.Server(name).Addr(), cfg)
}

// writeClientFiles (re)writes ConfigFile, KnownHostsFile and their copies
// in HomeDir/.ssh.
func (l *Lab) writeClientFiles() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var cfg, kh strings.Builder
	fmt.Fprintf(&cfg, "# Written by sshdtest: for tests, demos and benchmarks only.\n")
	for _, s := range l.Servers {
		fmt.Fprintf(&cfg, "\nHost %s\n", s.Name)
		fmt.Fprintf(&cfg, "  HostName %s\n", s.Host)
		fmt.Fprintf(&cfg, "  Port %d\n", s.Port)
		fmt.Fprintf(&cfg, "  User %s\n", s.User)
		fmt.Fprintf(&cfg, "  IdentityFile %s\n", quote(l.IdentityFile))
		fmt.Fprintf(&cfg, "  IdentitiesOnly yes\n")
		fmt.Fprintf(&cfg, "  UserKnownHostsFile %s\n", quote(l.KnownHostsFile))
		fmt.Fprintf(&cfg, "  GlobalKnownHostsFile /dev/null\n")
		fmt.Fprintf(&cfg, "  StrictHostKeyChecking yes\n")
		fmt.Fprintf(&cfg, "  KexAlgorithms curve25519-sha256\n")
		fmt.Fprintf(&cfg, "  BatchMode yes\n")
		kh.WriteString(knownhosts.Line([]string{s.Addr()}, s.HostKey))
		kh.WriteString("\n")
	}
	sshDir := filepath.Join(l.HomeDir, ".ssh")
	for _, f := range []struct {
		path, data string
	}{
		{l.ConfigFile, cfg.String()},
		{l.KnownHostsFile, kh.String()},
		{filepath.Join(sshDir, "config"), cfg.String()},
		{filepath.Join(sshDir, "known_hosts"), kh.String()},
	} {
		if err := writeFile(f.path, []byte(f.data), 0o644); err != nil {
			return err
		}
	}
	return nil
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// newServer validates opts and prepares a server's directory, keys and
// config, without starting it.
func (l *Lab) newServer(opts Options) (*Server, error) {
	if opts.Name == "" {
		opts.Name = "h1"
	}
	if !nameRE.MatchString(opts.Name) || opts.Name == "home" {
		return nil, fmt.Errorf("sshdtest: invalid server name %q", opts.Name)
	}
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	ip := net.ParseIP(opts.Host).To4()
	if ip == nil || ip[0] != 127 {
		return nil, fmt.Errorf("sshdtest: host %q is not an IPv4 address in 127.0.0.0/8", opts.Host)
	}
	cur, err := user.Current()
	if err != nil {
		return nil, fmt.Errorf("sshdtest: current user: %w", err)
	}
	uid, gid := -1, -1
	if opts.User == "" {
		opts.User = cur.Username
	}
	if opts.User != cur.Username {
		if os.Geteuid() != 0 {
			return nil, fmt.Errorf("sshdtest: logging in as %q (not the current user %q) needs root", opts.User, cur.Username)
		}
		pw, err := lookupPasswd(opts.User)
		if err != nil {
			return nil, err
		}
		if pw == nil {
			return nil, fmt.Errorf("sshdtest: user %q does not exist (create a throwaway one with EnsureUser)", opts.User)
		}
		if opts.LoginShell != "" && pw.throwaway() {
			if err := EnsureUser(opts.User, opts.LoginShell); err != nil {
				return nil, err
			}
		}
		uid, gid = pw.uid, pw.gid
	}

	dir := filepath.Join(l.Dir, opts.Name)
	s := &Server{
		Name:       opts.Name,
		Host:       ip.String(),
		User:       opts.User,
		Dir:        dir,
		CacheDir:   filepath.Join(dir, "cache"),
		configFile: filepath.Join(dir, "sshd_config"),
		logFile:    filepath.Join(dir, "sshd.log"),
		keyFile:    filepath.Join(dir, "ssh_host_ed25519_key"),
		authFile:   filepath.Join(dir, "authorized_keys"),
		extra:      append(append([]string(nil), l.extra...), opts.ExtraConfig...),
	}
	if err := os.Mkdir(dir, 0o711); err != nil {
		return nil, fmt.Errorf("sshdtest: %w", err)
	}
	if err := os.Chmod(dir, 0o711); err != nil { // umask
		return nil, fmt.Errorf("sshdtest: %w", err)
	}
	if err := os.Mkdir(s.CacheDir, 0o700); err != nil {
		return nil, fmt.Errorf("sshdtest: %w", err)
	}
	if uid >= 0 {
		if err := os.Chown(s.CacheDir, uid, gid); err != nil {
			return nil, fmt.Errorf("sshdtest: %w", err)
		}
	}
	_, hostPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("sshdtest: generating host key: %w", err)
	}
	privPEM, pubLine, err := marshalKey(hostPriv, "sshdtest-host-"+opts.Name)
	if err != nil {
		return nil, err
	}
	if s.HostKey, err = ssh.NewPublicKey(hostPriv.Public()); err != nil {
		return nil, fmt.Errorf("sshdtest: %w", err)
	}
	if err := writeFile(s.keyFile, privPEM, 0o600); err != nil {
		return nil, err
	}
	if err := writeFile(s.keyFile+".pub", pubLine, 0o644); err != nil {
		return nil, err
	}
	// sshd opens authorized_keys with the login user's uid.
	if err := writeFile(s.authFile, ssh.MarshalAuthorizedKey(l.signer.PublicKey()), 0o644); err != nil {
		return nil, err
	}
	return s, nil
}

// marshalKey returns the OpenSSH private key PEM and the authorized_keys
// line for priv.
func marshalKey(priv ed25519.PrivateKey, comment string) (privPEM, pubLine []byte, err error) {
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return nil, nil, fmt.Errorf("sshdtest: marshal private key: %w", err)
	}
	pub, err := ssh.NewPublicKey(priv.Public())
	if err != nil {
		return nil, nil, fmt.Errorf("sshdtest: %w", err)
	}
	line := strings.TrimSuffix(string(ssh.MarshalAuthorizedKey(pub)), "\n")
	return pem.EncodeToMemory(block), []byte(line + " " + comment + "\n"), nil
}

// writeFile writes data to path atomically (temp file + rename) with the
// given mode, regardless of umask.
func writeFile(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return fmt.Errorf("sshdtest: %w", err)
	}
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(mode)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("sshdtest: writing %s: %w", path, err)
	}
	return nil
}

// quote quotes s for ssh_config and sshd_config when it needs it.
func quote(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\"'#\\") {
		return s
	}
	return `"` + s + `"`
}
