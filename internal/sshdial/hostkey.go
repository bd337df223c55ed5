package sshdial

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
	"golang.org/x/term"
)

// HostKeyError reports a host key that could not be verified: an unknown
// host (Known false) with StrictHostKeyChecking yes or ask, or a key that
// differs from the one recorded in known_hosts (Known true), which is always
// refused.
type HostKeyError struct {
	// Host is the name the key was looked up under in known_hosts: the
	// HostKeyAlias or HostName, as "[host]:port" when the port is not 22.
	Host string
	// Alias is the host as given to Resolve.
	Alias string
	// KeyType is the type of the key the server sent, e.g. "ssh-ed25519".
	KeyType string
	// Fingerprint is the SHA256 fingerprint ("SHA256:...") of the server's
	// key.
	Fingerprint string
	// Known is false for an unknown host and true for a changed (or
	// revoked) key.
	Known bool
	// File is the known_hosts file holding the offending (recorded) key,
	// with Line its line; empty for an unknown host.
	File string
	// Line is the line of the offending key in File.
	Line int
	// Err is the underlying error (a *knownhosts.KeyError or
	// *knownhosts.RevokedError, or one writing known_hosts).
	Err error
}

// Error reads like ssh's host key messages and names the host.
func (e *HostKeyError) Error() string {
	kt := keyTypeName(e.KeyType)
	var revoked *knownhosts.RevokedError
	switch {
	case errors.As(e.Err, &revoked):
		return fmt.Sprintf("Host key %s %s for %s is marked as revoked in %s:%d. Host key verification failed.",
			kt, e.Fingerprint, e.Host, e.File, e.Line)
	case e.Known:
		return fmt.Sprintf("REMOTE HOST IDENTIFICATION HAS CHANGED for %s (%s)! The %s key sent by the remote host is %s; offending key in %s:%d. Host key verification failed.",
			e.Alias, e.Host, kt, e.Fingerprint, e.File, e.Line)
	default:
		var ke *knownhosts.KeyError
		if e.Err != nil && !errors.As(e.Err, &ke) {
			return fmt.Sprintf("Host key verification failed for %s (%s, %s key %s): %v", e.Alias, e.Host, kt, e.Fingerprint, e.Err)
		}
		return fmt.Sprintf("No %s host key is known for %s (%s) and you have requested strict checking. Host key verification failed (server key %s).",
			kt, e.Host, e.Alias, e.Fingerprint)
	}
}

// Unwrap returns the underlying error.
func (e *HostKeyError) Unwrap() error { return e.Err }

// keyTypeName maps a key or certificate type to ssh's display name base.
func keyTypeName(t string) string {
	switch {
	case strings.HasPrefix(t, "ecdsa-sha2-"):
		return "ECDSA"
	case strings.HasPrefix(t, "ssh-ed25519"):
		return "ED25519"
	case strings.HasPrefix(t, "ssh-rsa"), strings.HasPrefix(t, "rsa-"):
		return "RSA"
	case strings.HasPrefix(t, "ssh-dss"):
		return "DSA"
	}
	return t
}

// hostKeyChecker verifies host keys against known_hosts like ssh.
type hostKeyChecker struct {
	t       *Target
	lookup  string // "host:port" to look up (HostKeyAlias or HostName)
	cb      ssh.HostKeyCallback
	revokes bool                  // the files have an @revoked line
	known   []knownhosts.KnownKey // recorded for the host, found by algorithms
	warn    io.Writer
	tty     *os.File // for "ask"; nil when there is no terminal

	mu  sync.Mutex
	err error // the HostKeyError returned to the handshake
}

// newHostKeyChecker reads the known_hosts files of t that exist (parsing
// them again only when they changed: knownHosts).
func newHostKeyChecker(t *Target, o *Options) (*hostKeyChecker, error) {
	name, port := t.HostName, t.Port
	if t.HostKeyAlias != "" {
		// ssh looks an alias up bare, whatever the port.
		name, port = t.HostKeyAlias, 22
	}
	hk := &hostKeyChecker{
		t:      t,
		lookup: net.JoinHostPort(name, strconv.Itoa(port)),
		warn:   o.warn(),
	}
	if o.Stdin != nil && !t.BatchMode && term.IsTerminal(int(o.Stdin.Fd())) {
		hk.tty = o.Stdin
	}
	kh, err := knownHosts(append(append([]string(nil), t.UserKnownHostsFiles...), t.GlobalKnownHostsFiles...), hk.warn)
	if err != nil {
		return nil, err
	}
	hk.cb, hk.revokes = kh.cb, kh.revokes
	return hk, nil
}

// knownName is the known_hosts form of the lookup name.
func (hk *hostKeyChecker) knownName() string { return knownhosts.Normalize(hk.lookup) }

// lookupAddr is a net.Addr that makes knownhosts check exactly the lookup
// name (ssh's CheckHostIP defaults to no).
type lookupAddr string

// Network returns "tcp".
func (a lookupAddr) Network() string { return "tcp" }

// String returns the host:port to look up.
func (a lookupAddr) String() string { return string(a) }

// algorithms returns the host key algorithms to offer: those of keys
// already known for the host first (so that a server with several host keys
// uses the recorded one, like ssh), then the rest of x/crypto's defaults.
func (hk *hostKeyChecker) algorithms() []string {
	if hk.cb == nil {
		return nil
	}
	probe := probeKey()
	if probe == nil {
		return nil
	}
	var ke *knownhosts.KeyError
	if err := hk.cb(hk.lookup, lookupAddr(hk.lookup), probe); !errors.As(err, &ke) || len(ke.Want) == 0 {
		return nil
	}
	hk.known = ke.Want
	var algos []string
	add := func(a ...string) {
		for _, x := range a {
			dup := false
			for _, y := range algos {
				dup = dup || x == y
			}
			if !dup {
				algos = append(algos, x)
			}
		}
	}
	for _, k := range ke.Want {
		switch t := k.Key.Type(); t {
		case ssh.KeyAlgoRSA:
			add(ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA)
		default:
			add(t)
		}
	}
	supported := append(ssh.SupportedAlgorithms().HostKeys, ssh.InsecureAlgorithms().HostKeys...)
	var out []string
	for _, a := range algos {
		for _, s := range supported {
			if a == s {
				out = append(out, a)
				break
			}
		}
	}
	if len(out) == 0 {
		return nil
	}
	for _, s := range ssh.SupportedAlgorithms().HostKeys {
		dup := false
		for _, a := range out {
			dup = dup || a == s
		}
		if !dup {
			out = append(out, s)
		}
	}
	return out
}

// check is the ssh.HostKeyCallback.
func (hk *hostKeyChecker) check(_ string, _ net.Addr, key ssh.PublicKey) error {
	err := hk.verify(key)
	if err != nil {
		hk.mu.Lock()
		hk.err = err
		hk.mu.Unlock()
	}
	return err
}

// failure returns the error check returned, if any.
func (hk *hostKeyChecker) failure() error {
	hk.mu.Lock()
	defer hk.mu.Unlock()
	return hk.err
}

func (hk *hostKeyChecker) verify(key ssh.PublicKey) error {
	hkErr := &HostKeyError{
		Host:        hk.knownName(),
		Alias:       hk.t.Alias,
		KeyType:     key.Type(),
		Fingerprint: ssh.FingerprintSHA256(key),
	}
	if hk.recorded(key) {
		return nil
	}
	var err error = &knownhosts.KeyError{}
	if hk.cb != nil {
		err = hk.cb(hk.lookup, lookupAddr(hk.lookup), key)
		if cert, ok := key.(*ssh.Certificate); ok && err != nil {
			// No (valid) CA for this host certificate: check its plain key,
			// like ssh does.
			var ke *knownhosts.KeyError
			var re *knownhosts.RevokedError
			if !errors.As(err, &ke) && !errors.As(err, &re) {
				err = hk.cb(hk.lookup, lookupAddr(hk.lookup), cert.Key)
			}
		}
	}
	if err == nil {
		return nil
	}
	var ke *knownhosts.KeyError
	var re *knownhosts.RevokedError
	switch {
	case errors.As(err, &re):
		hkErr.Known, hkErr.File, hkErr.Line, hkErr.Err = true, re.Revoked.Filename, re.Revoked.Line, err
		return hkErr
	case errors.As(err, &ke) && len(ke.Want) > 0:
		// A changed key: refused whatever StrictHostKeyChecking says.
		hkErr.Known, hkErr.Err = true, err
		hkErr.File, hkErr.Line = ke.Want[0].Filename, ke.Want[0].Line
		for _, w := range ke.Want {
			if w.Key.Type() == key.Type() {
				hkErr.File, hkErr.Line = w.Filename, w.Line
				break
			}
		}
		return hkErr
	case !errors.As(err, &ke):
		hkErr.Err = err
		return hkErr
	}
	// Unknown host.
	hkErr.Err = err
	switch hk.t.StrictHostKeyChecking {
	case "no":
		fmt.Fprintf(hk.warn, "Warning: the %s host key for %s (%s) is not verified (StrictHostKeyChecking=no): %s. Connecting anyway.\n",
			keyTypeName(key.Type()), hk.knownName(), hk.t.Alias, hkErr.Fingerprint)
		return nil
	case "accept-new":
		return hk.add(key, hkErr)
	case "ask":
		if hk.tty != nil && hk.ask(key) {
			return hk.add(key, hkErr)
		}
		return hkErr
	default:
		return hkErr
	}
}

// recorded reports whether key is, byte for byte, one of the keys that
// known_hosts records for the host, as the lookup of algorithms found them
// (its probe key matches no line, so KeyError.Want lists every matching
// line's key). For a plain key (not a certificate) and files without an
// @revoked line, that is exactly when the callback accepts it: knownhosts
// then accepts a key equal to the key of any line that matches the host.
// The callback's second lookup, which with hashed known_hosts computes an
// HMAC for every line (1.1 ms per 2,000 lines), is thus left out when the
// key is known; every other case takes it, and its errors.
func (hk *hostKeyChecker) recorded(key ssh.PublicKey) bool {
	if hk.cb == nil || hk.revokes || len(hk.known) == 0 {
		return false
	}
	if _, cert := key.(*ssh.Certificate); cert {
		return false
	}
	blob := key.Marshal()
	for _, k := range hk.known {
		if bytes.Equal(k.Key.Marshal(), blob) {
			return true
		}
	}
	return false
}

// ask prompts on the terminal like ssh; it reports whether the user
// accepted the key.
func (hk *hostKeyChecker) ask(key ssh.PublicKey) bool {
	terminalMu.Lock()
	defer terminalMu.Unlock()
	fp := ssh.FingerprintSHA256(key)
	fmt.Fprintf(hk.warn, "The authenticity of host '%s (%s)' can't be established.\n%s key fingerprint is %s.\n",
		hk.t.Alias, hk.knownName(), keyTypeName(key.Type()), fp)
	for i := 0; i < 3; i++ {
		fmt.Fprintf(hk.warn, "Are you sure you want to continue connecting (yes/no/[fingerprint])? ")
		ans, err := readLine(hk.tty)
		if err != nil {
			return false
		}
		switch ans = strings.TrimSpace(ans); {
		case strings.EqualFold(ans, "yes") || ans == fp:
			return true
		case strings.EqualFold(ans, "no"):
			return false
		}
		fmt.Fprintf(hk.warn, "Please type 'yes', 'no' or the fingerprint: ")
	}
	return false
}

// readLine reads one line from f without buffering past it.
func readLine(f *os.File) (string, error) {
	var b []byte
	one := make([]byte, 1)
	for len(b) < 4096 {
		n, err := f.Read(one)
		if n == 1 {
			if one[0] == '\n' {
				break
			}
			b = append(b, one[0])
			continue
		}
		if err != nil {
			if len(b) > 0 {
				break
			}
			return "", err
		}
	}
	return strings.TrimRight(string(b), "\r"), nil
}

// add appends key to the first user known_hosts file (creating it 0600 and
// its directory 0700) and reports it like ssh.
func (hk *hostKeyChecker) add(key ssh.PublicKey, hkErr *HostKeyError) error {
	if len(hk.t.UserKnownHostsFiles) == 0 {
		fmt.Fprintf(hk.warn, "Warning: no UserKnownHostsFile to record the %s host key of %s in.\n",
			keyTypeName(key.Type()), hk.knownName())
		return nil
	}
	file := hk.t.UserKnownHostsFiles[0]
	name := hk.knownName()
	if hk.t.HashKnownHosts {
		name = knownhosts.HashHostname(name)
	}
	line := knownhosts.Line([]string{name}, key) + "\n"
	if err := appendKnownHost(file, line); err != nil {
		hkErr.File, hkErr.Err = file, err
		return hkErr
	}
	fmt.Fprintf(hk.warn, "Warning: Permanently added '%s' (%s) to the list of known hosts.\n",
		hk.knownName(), keyTypeName(key.Type()))
	return nil
}

var knownHostsMu sync.Mutex

func appendKnownHost(file, line string) error {
	knownHostsMu.Lock()
	defer knownHostsMu.Unlock()
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(file, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	// Start on a new line if the file does not end with one.
	if st, err := f.Stat(); err == nil && st.Size() > 0 {
		last := make([]byte, 1)
		if _, err := f.ReadAt(last, st.Size()-1); err == nil && last[0] != '\n' {
			line = "\n" + line
		}
	}
	_, err = f.WriteString(line)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
