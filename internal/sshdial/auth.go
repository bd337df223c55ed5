package sshdial

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"slices"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/term"
)

// AuthError reports that the server accepted none of the keys offered
// (ssh's "Permission denied (publickey)").
type AuthError struct {
	// Host is the host as given to Resolve; User the remote user.
	Host, User string
	// Tried describes the keys offered, in order, e.g.
	// "/home/u/.ssh/id_ed25519 ED25519 SHA256:..." or
	// "agent ED25519 SHA256:...".
	Tried []string
	// Skipped describes, in the same way, the keys not offered because
	// none of their signature algorithms is in PubkeyAcceptedAlgorithms.
	Skipped []string
	// Err is the error of golang.org/x/crypto/ssh.
	Err error
}

// Error says "user@host: Permission denied (publickey)" and which keys
// were tried.
func (e *AuthError) Error() string {
	tried := "no keys were available"
	if len(e.Tried) > 0 {
		tried = "tried " + strings.Join(e.Tried, ", ")
	}
	if len(e.Skipped) > 0 {
		tried += "; not in PubkeyAcceptedAlgorithms: " + strings.Join(e.Skipped, ", ")
	}
	return fmt.Sprintf("%s@%s: Permission denied (publickey); %s", e.User, e.Host, tried)
}

// Unwrap returns the underlying error.
func (e *AuthError) Unwrap() error { return e.Err }

// KeyFileError reports an identity file that cannot be used: a -i file that
// is missing or unreadable, or an encrypted key that the server would
// accept but that can be decrypted neither by ssh-agent (no agent key with
// the same public key) nor through a passphrase prompt (no terminal).
type KeyFileError struct {
	// File is the identity file.
	File string
	// Err is the cause; errors.Is(err, ErrKeyEncrypted) tells an encrypted
	// key.
	Err error
}

// Error names the file and the problem.
func (e *KeyFileError) Error() string {
	if errors.Is(e.Err, ErrKeyEncrypted) {
		return fmt.Sprintf("identity file %s is encrypted and no ssh-agent key or terminal is available to decrypt it", e.File)
	}
	return fmt.Sprintf("identity file %s: %v", e.File, e.Err)
}

// Unwrap returns the underlying error.
func (e *KeyFileError) Unwrap() error { return e.Err }

// ErrKeyEncrypted is the cause in a KeyFileError for an encrypted key that
// could not be decrypted.
var ErrKeyEncrypted = errors.New("key is encrypted and no ssh-agent key or terminal is available to decrypt it")

// encryptedError is ErrKeyEncrypted that also unwraps to the
// *ssh.PassphraseMissingError.
type encryptedError struct{ pm *ssh.PassphraseMissingError }

func (e *encryptedError) Error() string        { return ErrKeyEncrypted.Error() }
func (e *encryptedError) Is(target error) bool { return target == ErrKeyEncrypted }
func (e *encryptedError) Unwrap() error        { return e.pm }

// identity is one signer to offer, with a description for AuthError.
type identity struct {
	signer ssh.Signer
	desc   string
}

// authState builds and tracks the keys of one connection attempt.
type authState struct {
	ids       []identity
	skipped   []string // keys PubkeyAcceptedAlgorithms leaves out
	agentConn net.Conn
	started   bool // the server asked for keys (the handshake got to auth)

	mu        sync.Mutex
	signErr   error    // a KeyFileError from a lazy signer
	encrypted []string // encrypted keys without a known public key, skipped
}

func (a *authState) close() {
	if a.agentConn != nil {
		a.agentConn.Close()
	}
}

// setSignErr records the first error of a lazy signer.
func (a *authState) setSignErr(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.signErr == nil {
		a.signErr = err
	}
}

func (a *authState) getSignErr() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.signErr
}

// method returns the publickey auth method offering a.ids.
func (a *authState) method() ssh.AuthMethod {
	return ssh.PublicKeysCallback(func() ([]ssh.Signer, error) {
		a.mu.Lock()
		a.started = true
		a.mu.Unlock()
		out := make([]ssh.Signer, len(a.ids))
		for i, id := range a.ids {
			out[i] = id.signer
		}
		return out, nil
	})
}

func (a *authState) tried() []string {
	out := make([]string, len(a.ids))
	for i, id := range a.ids {
		out[i] = id.desc
	}
	return out
}

func describe(prefix string, k ssh.PublicKey) string {
	t := k.Type()
	if c, ok := k.(*ssh.Certificate); ok {
		return fmt.Sprintf("%s %s-CERT %s", prefix, keyTypeName(c.Key.Type()), ssh.FingerprintSHA256(c.Key))
	}
	return fmt.Sprintf("%s %s %s", prefix, keyTypeName(t), ssh.FingerprintSHA256(k))
}

// fileKey is a loaded identity file.
type fileKey struct {
	file   string
	pub    ssh.PublicKey // nil if unknown (an encrypted PEM key without .pub)
	signer ssh.Signer    // nil for an encrypted key
	pm     *ssh.PassphraseMissingError
	data   []byte // nil when only the public key is known
}

// buildAuth collects the keys to offer for t, like ssh: agent keys first
// (only those matching an identity file with IdentitiesOnly), then the
// identity files not already in the agent; a certificate (CertificateFile,
// or <identity>-cert.pub) goes just before its key.
func buildAuth(t *Target, o *Options) (*authState, error) {
	a := &authState{}
	warn := o.warn()
	var tty *os.File
	if o.Stdin != nil && !t.BatchMode && term.IsTerminal(int(o.Stdin.Fd())) {
		tty = o.Stdin
	}

	// Identity files.
	var files []*fileKey
	for i, f := range t.IdentityFiles {
		explicit := i < t.explicitIdentities
		fk := &fileKey{file: f}
		if b, err := os.ReadFile(f + ".pub"); err == nil {
			if pub, _, _, _, err := ssh.ParseAuthorizedKey(b); err == nil {
				fk.pub = pub
			}
		}
		data, err := os.ReadFile(f)
		if err != nil {
			if fk.pub != nil && errors.Is(err, fs.ErrNotExist) {
				// Only the .pub: usable to pick the agent's key, like ssh.
				files = append(files, fk)
				continue
			}
			if explicit {
				return nil, &KeyFileError{File: f, Err: err}
			}
			if !errors.Is(err, fs.ErrNotExist) {
				fmt.Fprintf(warn, "Load key %q: %v\n", f, err)
			}
			continue
		}
		fk.data = data
		signer, err := parsePrivateKey(data)
		var pm *ssh.PassphraseMissingError
		switch {
		case err == nil:
			fk.signer, fk.pub = signer, signer.PublicKey()
		case errors.As(err, &pm):
			fk.pm = pm
			if pm.PublicKey != nil {
				fk.pub = pm.PublicKey
			}
		default:
			if pub, _, _, _, perr := ssh.ParseAuthorizedKey(data); perr == nil {
				// "IdentityFile key.pub": a public key naming an agent key.
				fk.pub, fk.data = pub, nil
				break
			}
			if explicit {
				return nil, &KeyFileError{File: f, Err: err}
			}
			if !strings.Contains(err.Error(), "unhandled key type") {
				// FIDO (sk-) and XMSS keys are silently left to the agent.
				fmt.Fprintf(warn, "Load key %q: %v\n", f, err)
			}
			continue
		}
		files = append(files, fk)
	}

	// Certificates.
	var certs []*ssh.Certificate
	certFiles := append([]string(nil), t.CertificateFiles...)
	for _, fk := range files {
		certFiles = append(certFiles, fk.file+"-cert.pub")
	}
	for _, cf := range certFiles {
		b, err := os.ReadFile(cf)
		if err != nil {
			continue
		}
		pub, _, _, _, err := ssh.ParseAuthorizedKey(b)
		if err != nil {
			fmt.Fprintf(warn, "Load certificate %q: %v\n", cf, err)
			continue
		}
		if c, ok := pub.(*ssh.Certificate); ok {
			certs = append(certs, c)
		}
	}

	seen := map[string]bool{}
	accepted := t.PubkeyAcceptedAlgorithms
	if accepted == nil {
		accepted = defaultPubkeyAlgos
	}
	add := func(s ssh.Signer, prefix string) {
		k := string(s.PublicKey().Marshal())
		if seen[k] {
			return
		}
		seen[k] = true
		desc := describe(prefix, s.PublicKey())
		if s = acceptedSigner(s, accepted); s == nil {
			a.skipped = append(a.skipped, desc)
			return
		}
		a.ids = append(a.ids, identity{signer: s, desc: desc})
	}
	addWithCerts := func(s ssh.Signer, prefix string) {
		for _, c := range certs {
			if bytes.Equal(c.Key.Marshal(), s.PublicKey().Marshal()) {
				if cs, err := ssh.NewCertSigner(c, s); err == nil {
					add(cs, prefix)
				}
			}
		}
		add(s, prefix)
	}
	filePub := map[string]bool{}
	for _, fk := range files {
		if fk.pub != nil {
			filePub[string(fk.pub.Marshal())] = true
		}
	}

	// Agent.
	inAgent := map[string]bool{}
	if sock := agentSocket(t); sock != "" {
		conn, err := net.Dial("unix", sock)
		if err == nil {
			a.agentConn = conn
			signers, err := agent.NewClient(conn).Signers()
			if err != nil {
				fmt.Fprintf(warn, "Warning: listing ssh-agent keys at %s: %v\n", sock, err)
			}
			for _, s := range signers {
				k := s.PublicKey()
				base := k
				if c, ok := k.(*ssh.Certificate); ok {
					base = c.Key
				}
				if t.IdentitiesOnly && !filePub[string(base.Marshal())] {
					continue
				}
				inAgent[string(base.Marshal())] = true
				addWithCerts(s, "agent")
			}
		}
	}

	// Identity files not already offered through the agent.
	for _, fk := range files {
		if fk.pub != nil && inAgent[string(fk.pub.Marshal())] {
			continue
		}
		switch {
		case fk.signer != nil:
			addWithCerts(fk.signer, fk.file)
		case fk.data == nil:
			// A public key only, not in the agent: nothing to sign with.
		case fk.pub != nil:
			addWithCerts(&lazySigner{fk: fk, tty: tty, warn: warn, auth: a}, fk.file)
		case tty != nil:
			// Encrypted, public key unknown: ask now, like ssh.
			l := &lazySigner{fk: fk, tty: tty, warn: warn, auth: a}
			s, err := l.load()
			if err != nil {
				if explicitIndex(t, fk.file) {
					a.close()
					return nil, err
				}
				continue
			}
			addWithCerts(s, fk.file)
		default:
			if explicitIndex(t, fk.file) {
				a.close()
				return nil, &KeyFileError{File: fk.file, Err: &encryptedError{fk.pm}}
			}
			a.encrypted = append(a.encrypted, fk.file)
		}
	}
	return a, nil
}

func explicitIndex(t *Target, f string) bool {
	for i := 0; i < t.explicitIdentities && i < len(t.IdentityFiles); i++ {
		if t.IdentityFiles[i] == f {
			return true
		}
	}
	return false
}

// agentSocket returns the agent socket for t, or "".
func agentSocket(t *Target) string {
	switch t.IdentityAgent {
	case "none":
		return ""
	case "":
		return os.Getenv("SSH_AUTH_SOCK")
	}
	return t.IdentityAgent
}

// acceptedSigner returns s restricted to the signature algorithms that
// accepted (ssh's PubkeyAcceptedAlgorithms) allows for its key, or nil when
// it allows none: ssh then does not offer the key. For a certificate the
// names checked are the certificate's (rsa-sha2-512-cert-v01@openssh.com),
// and the restriction is on the algorithms of the key inside.
func acceptedSigner(s ssh.Signer, accepted []string) ssh.Signer {
	pub := s.PublicKey()
	keyType := pub.Type()
	cert, isCert := pub.(*ssh.Certificate)
	if isCert {
		keyType = cert.Key.Type()
	}
	algos := []string{keyType}
	if keyType == ssh.KeyAlgoRSA {
		algos = []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
	}
	var keep []string
	for _, algo := range algos {
		name := algo
		if isCert {
			name = certAlgo[algo]
		}
		if name != "" && slices.Contains(accepted, name) {
			keep = append(keep, algo)
		}
	}
	switch {
	case len(keep) == 0:
		return nil
	case len(keep) == len(algos):
		return s
	}
	as, ok := s.(ssh.AlgorithmSigner)
	if !ok {
		// It signs with its key type's algorithm only (ssh-rsa for RSA).
		if slices.Contains(keep, keyType) {
			return s
		}
		return nil
	}
	ms, err := ssh.NewSignerWithAlgorithms(as, keep)
	if err != nil {
		return nil
	}
	return ms
}

// certAlgo names the certificate algorithm of each signature algorithm.
var certAlgo = map[string]string{
	ssh.KeyAlgoED25519:    ssh.CertAlgoED25519v01,
	ssh.KeyAlgoECDSA256:   ssh.CertAlgoECDSA256v01,
	ssh.KeyAlgoECDSA384:   ssh.CertAlgoECDSA384v01,
	ssh.KeyAlgoECDSA521:   ssh.CertAlgoECDSA521v01,
	ssh.KeyAlgoSKED25519:  ssh.CertAlgoSKED25519v01,
	ssh.KeyAlgoSKECDSA256: ssh.CertAlgoSKECDSA256v01,
	ssh.KeyAlgoRSASHA512:  ssh.CertAlgoRSASHA512v01,
	ssh.KeyAlgoRSASHA256:  ssh.CertAlgoRSASHA256v01,
	ssh.KeyAlgoRSA:        ssh.CertAlgoRSAv01,
}

// lazySigner is an encrypted identity file whose public key is known: it
// is offered to the server, and decrypted (through a passphrase prompt on
// the terminal) only when the server would accept it.
type lazySigner struct {
	fk   *fileKey
	tty  *os.File
	warn io.Writer
	auth *authState

	once   sync.Once
	signer ssh.Signer
	err    error
}

// PublicKey returns the key's public half, known without decrypting.
func (l *lazySigner) PublicKey() ssh.PublicKey { return l.fk.pub }

func (l *lazySigner) load() (ssh.Signer, error) {
	l.once.Do(func() {
		// One question at a time on the terminal, and one per key: the
		// connections of a fan-out wait for the first one's answer.
		terminalMu.Lock()
		defer terminalMu.Unlock()
		sum := sha256.Sum256(l.fk.data)
		if s := decryptedKey(sum); s != nil {
			l.signer = s
			return
		}
		if l.tty == nil {
			l.err = &KeyFileError{File: l.fk.file, Err: &encryptedError{l.fk.pm}}
			return
		}
		for i := 0; i < 3; i++ {
			fmt.Fprintf(l.warn, "Enter passphrase for key '%s': ", l.fk.file)
			pass, err := term.ReadPassword(int(l.tty.Fd()))
			fmt.Fprintln(l.warn)
			if err != nil {
				l.err = &KeyFileError{File: l.fk.file, Err: err}
				return
			}
			s, err := ssh.ParsePrivateKeyWithPassphrase(l.fk.data, pass)
			if err == nil {
				l.signer = s
				keepDecryptedKey(sum, s)
				return
			}
			if !errors.Is(err, x509.IncorrectPasswordError) {
				l.err = &KeyFileError{File: l.fk.file, Err: err}
				return
			}
			fmt.Fprintln(l.warn, "Bad passphrase, try again.")
		}
		l.err = &KeyFileError{File: l.fk.file, Err: errors.New("incorrect passphrase")}
	})
	if l.err != nil && l.auth != nil {
		l.auth.setSignErr(l.err)
	}
	return l.signer, l.err
}

// Sign decrypts the key (once) and signs.
func (l *lazySigner) Sign(rand io.Reader, data []byte) (*ssh.Signature, error) {
	s, err := l.load()
	if err != nil {
		return nil, err
	}
	return s.Sign(rand, data)
}

// SignWithAlgorithm makes lazySigner an ssh.AlgorithmSigner, so RSA keys
// sign with rsa-sha2-256/512.
func (l *lazySigner) SignWithAlgorithm(rand io.Reader, data []byte, algorithm string) (*ssh.Signature, error) {
	s, err := l.load()
	if err != nil {
		return nil, err
	}
	if as, ok := s.(ssh.AlgorithmSigner); ok {
		return as.SignWithAlgorithm(rand, data, algorithm)
	}
	return s.Sign(rand, data)
}
