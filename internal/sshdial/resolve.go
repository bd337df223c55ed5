package sshdial

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// Target is a resolved host: what ssh -G would print, with file names
// expanded.
type Target struct {
	// Alias is the host as given (without any "user@"), as matched against
	// Host lines; HostName is the name or address to connect to.
	Alias, HostName string
	// Port is the TCP port (default 22).
	Port int
	// User is the remote user (default: the local user).
	User string
	// IdentityFiles are the identity (private key) files, -i ones first,
	// with ~, %d, %u, %h, %r, %% (and ssh's other tokens) expanded; they
	// need not exist. Without any IdentityFile they are ssh's defaults.
	IdentityFiles []string
	// IdentitiesOnly limits authentication to the identity files (agent
	// keys are used only when they match one of them).
	IdentitiesOnly bool
	// IdentityAgent is the agent socket: "" means $SSH_AUTH_SOCK, "none"
	// disables the agent.
	IdentityAgent string
	// CertificateFiles are certificate files (expanded like IdentityFiles).
	CertificateFiles []string
	// UserKnownHostsFiles and GlobalKnownHostsFiles are the known_hosts
	// files; new keys (accept-new) go to the first user file.
	UserKnownHostsFiles, GlobalKnownHostsFiles []string
	// StrictHostKeyChecking is "yes", "accept-new", "no" or "ask" (which
	// behaves like "yes" unless Options.Stdin is a terminal).
	StrictHostKeyChecking string
	// HostKeyAlias is the name to look the host key up under, if set.
	HostKeyAlias string
	// ProxyJump lists the jump hops in order, each [user@]host[:port] or
	// ssh://[user@]host[:port]; each is resolved through ssh_config itself
	// when dialed.
	ProxyJump []string
	// ProxyCommand is the command (tokens expanded) whose stdin and stdout
	// carry the connection, run with sh -c; "" if none.
	ProxyCommand string
	// ConnectTimeout limits connecting and the SSH handshake of each hop;
	// 0 means only the context limits them.
	ConnectTimeout time.Duration
	// BindAddress is the local address direct TCP connections are made
	// from (ssh's BindAddress); "" lets the system choose.
	BindAddress string
	// AddressFamily is "inet", "inet6" or "any" (the default): which
	// addresses of HostName a direct connection may use.
	AddressFamily string
	// ConnectionAttempts is how many times a direct TCP connection is
	// tried, a second apart, before giving up (default 1).
	ConnectionAttempts int
	// SendEnv are the patterns of local environment variables to send
	// to the server (whose AcceptEnv decides), after the "-PATTERN"
	// removals; SetEnv the NAME=VALUE pairs to send. See Env.
	SendEnv, SetEnv []string
	// ServerAliveInterval is the interval of keepalive requests (0: none).
	ServerAliveInterval time.Duration
	// ServerAliveCountMax is the number of unanswered keepalives after which
	// the connection is closed (default 3).
	ServerAliveCountMax int
	// KexAlgorithms, Ciphers and MACs are the configured algorithm lists
	// (after +, - and ^ are applied to OpenSSH's defaults); nil when not
	// configured. Dial keeps the ones golang.org/x/crypto/ssh supports.
	KexAlgorithms []string
	// Ciphers: see KexAlgorithms.
	Ciphers []string
	// MACs: see KexAlgorithms.
	MACs []string
	// HostKeyAlgorithms: see KexAlgorithms. When set, only these are
	// offered, in this order; otherwise x/crypto's, the types recorded in
	// known_hosts for the host first.
	HostKeyAlgorithms []string
	// PubkeyAcceptedAlgorithms: see KexAlgorithms. The public-key
	// signature algorithms (and so key types) authentication may use;
	// nil when not configured, meaning OpenSSH's default, which leaves out
	// ssh-rsa (RSA keys sign with rsa-sha2-512 or rsa-sha2-256).
	PubkeyAcceptedAlgorithms []string
	// HashKnownHosts makes keys added to known_hosts hashed.
	HashKnownHosts bool
	// BatchMode disables every prompt (passphrases, host keys).
	BatchMode bool
	// ControlPath is the socket of an OpenSSH ControlMaster for this
	// destination (ssh's ControlPath, with ~, ${ENV} and tokens
	// expanded); "" when none. See ControlSocket.
	ControlPath string
	// ControlMaster is ssh's ControlMaster: "no" (the default), "yes",
	// "ask", "auto" or "autoask".
	ControlMaster string

	explicitIdentities int // how many leading IdentityFiles came from -i
}

// Defaults of OpenSSH 9.2.
var (
	defaultIdentityFiles = []string{
		"~/.ssh/id_rsa", "~/.ssh/id_ecdsa", "~/.ssh/id_ecdsa_sk",
		"~/.ssh/id_ed25519", "~/.ssh/id_ed25519_sk", "~/.ssh/id_xmss",
		"~/.ssh/id_dsa",
	}
	defaultUserKnownHosts   = []string{"~/.ssh/known_hosts", "~/.ssh/known_hosts2"}
	defaultGlobalKnownHosts = []string{"/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2"}
	defaultHostKeyAlgos     = strings.Split("ssh-ed25519-cert-v01@openssh.com,ecdsa-sha2-nistp256-cert-v01@openssh.com,ecdsa-sha2-nistp384-cert-v01@openssh.com,ecdsa-sha2-nistp521-cert-v01@openssh.com,sk-ssh-ed25519-cert-v01@openssh.com,sk-ecdsa-sha2-nistp256-cert-v01@openssh.com,rsa-sha2-512-cert-v01@openssh.com,rsa-sha2-256-cert-v01@openssh.com,ssh-ed25519,ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521,sk-ssh-ed25519@openssh.com,sk-ecdsa-sha2-nistp256@openssh.com,rsa-sha2-512,rsa-sha2-256", ",")
	defaultPubkeyAlgos      = defaultHostKeyAlgos // the same list in ssh 9.2
	defaultKex              = strings.Split("sntrup761x25519-sha512,sntrup761x25519-sha512@openssh.com,curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256,ecdh-sha2-nistp384,ecdh-sha2-nistp521,diffie-hellman-group-exchange-sha256,diffie-hellman-group16-sha512,diffie-hellman-group18-sha512,diffie-hellman-group14-sha256", ",")
	defaultCiphers          = strings.Split("chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr,aes128-gcm@openssh.com,aes256-gcm@openssh.com", ",")
	defaultMACs             = strings.Split("umac-64-etm@openssh.com,umac-128-etm@openssh.com,hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com,hmac-sha1-etm@openssh.com,umac-64@openssh.com,umac-128@openssh.com,hmac-sha2-256,hmac-sha2-512,hmac-sha1", ",")
)

// Resolve resolves a host alias (optionally "user@alias" or
// "ssh://[user@]alias[:port]") through the ssh configuration like ssh -G.
// It is ResolveContext without a deadline for Match exec commands.
func Resolve(alias string, o Options) (*Target, error) {
	return ResolveContext(context.Background(), alias, o)
}

// ResolveContext is Resolve whose Match exec commands are killed when ctx
// ends, which fails the resolution.
func ResolveContext(ctx context.Context, alias string, o Options) (*Target, error) {
	home, err := o.homeDir()
	if err != nil {
		return nil, err
	}
	destUser, host, destPort, err := parseDestination(alias)
	if err == nil {
		err = checkCommandLineNames(host, destUser, o.User)
	}
	if err != nil {
		return nil, fmt.Errorf("sshdial: %q: %v", alias, err)
	}
	st := newSettings()

	// Command line first: it wins over the files.
	if o.User != "" {
		st.set("user", o.User)
	}
	if o.Port != 0 {
		if o.Port < 0 || o.Port > 65535 {
			return nil, fmt.Errorf("sshdial: bad port %d", o.Port)
		}
		st.set("port", strconv.Itoa(o.Port))
	}
	if o.JumpHosts != "" {
		if _, _, err := parseJumpList(o.JumpHosts); err != nil {
			return nil, fmt.Errorf("sshdial: -J %s: %v", o.JumpHosts, err)
		}
		st.set("proxyjump", o.JumpHosts)
	} else if o.noProxy {
		st.set("proxyjump", "none")
	}
	for _, f := range o.IdentityFiles {
		st.set("identityfile", f)
	}
	nExplicit := len(st.multi["identityfile"])
	for _, opt := range o.Options {
		k, v, err := parseOption(opt)
		if err != nil {
			return nil, fmt.Errorf("sshdial: %v", err)
		}
		switch lk := strings.ToLower(k); lk {
		case "host", "match", "include":
			return nil, fmt.Errorf("sshdial: -o %s: %s directive not supported as a command-line option", opt, k)
		case "proxyjump", "proxycommand":
			if o.JumpHosts != "" {
				return nil, fmt.Errorf("sshdial: -o %s cannot be combined with -J", k)
			}
			st.set(lk, v)
		case "pubkeyacceptedkeytypes": // its name before OpenSSH 8.5
			st.set("pubkeyacceptedalgorithms", v)
		default:
			st.set(lk, v)
		}
	}
	if destUser != "" {
		st.set("user", destUser)
	}
	if destPort != 0 {
		st.set("port", strconv.Itoa(destPort))
	}

	cs, err := cachedConfig(&o, home)
	if err != nil {
		return nil, fmt.Errorf("sshdial: %w", err)
	}
	localU := localUser()
	// pass applies the blocks that match: Host patterns are matched
	// against name, the host as given in the first pass, and in the
	// final one the host name that pass settled on (HostName substituted,
	// then canonicalized), as ssh does.
	pass := func(final bool, name string) error {
		seen := make(map[*block]bool)
		for i := range cs.chunks {
			c := &cs.chunks[i]
			ms := matchState{originalHost: host, localUser: localU, final: final, host: name, user: localU,
				port: "22", home: home, stderr: o.warn(), ctx: ctx}
			if hn, ok := st.get("hostname"); ok {
				if h, err := expandHostName(hn, name); err == nil {
					ms.host = h
				}
			}
			if u, ok := st.get("user"); ok {
				ms.user = u
			}
			if p, ok := st.get("port"); ok {
				ms.port = p
			}
			ms.keyAlias = ms.host
			if a, ok := st.get("hostkeyalias"); ok {
				ms.keyAlias = a
			}
			active, err := blockActive(c.blk, name, ms, seen)
			if err != nil {
				return fmt.Errorf("sshdial: %w", err)
			}
			if active && c.cfg != nil {
				if err := st.apply(c, name); err != nil {
					return fmt.Errorf("sshdial: %w", err)
				}
			}
		}
		return nil
	}
	if err := pass(false, host); err != nil {
		return nil, err
	}
	// Like ssh, the host name is settled now: HostName's %h substituted
	// (a HostName of a later block no longer changes it), lowercased,
	// then canonicalized.
	name := strings.ToLower(host)
	if hn, ok := st.get("hostname"); ok {
		if h, err := expandHostName(hn, name); err == nil {
			// ssh lowercases the whole name, HostName's text included.
			name = strings.ToLower(h)
			st.single["hostname"] = strings.ReplaceAll(name, "%", "%%")
		}
	}
	canonical, err := st.canonicalize(ctx, name, &o)
	if err != nil {
		return nil, fmt.Errorf("sshdial: %s: %w", host, err)
	}
	if canonical != "" {
		name = canonical
		st.single["hostname"] = strings.ReplaceAll(canonical, "%", "%%")
	}
	if cs.wantFinal || st.canonicalizing() {
		if err := pass(true, name); err != nil {
			return nil, err
		}
	}
	return st.target(host, home, localU, nExplicit)
}

// canonicalizing reports whether CanonicalizeHostname asks for the final
// pass (any value but no).
func (st *settings) canonicalizing() bool {
	v, _ := st.get("canonicalizehostname")
	switch strings.ToLower(v) {
	case "yes", "always", "true":
		return true
	}
	return false
}

// canonicalize applies CanonicalizeHostname to name (the host name after
// the first pass) like ssh: for a direct connection (or any, with
// "always"), a name ending in a dot that resolves loses the dot; a name
// with at most CanonicalizeMaxDots dots (1) becomes the first name.domain
// that resolves, for each domain of CanonicalDomains in turn; an IP
// address is left alone. It returns the canonical name, or "" when there
// is none, which is an error with CanonicalizeFallbackLocal no. CNAMEs are
// not followed (CanonicalizePermittedCNAMEs is ignored).
func (st *settings) canonicalize(ctx context.Context, name string, o *Options) (string, error) {
	mode, _ := st.get("canonicalizehostname")
	mode = strings.ToLower(mode)
	switch mode {
	case "", "no", "false", "none":
		return "", nil
	case "yes", "true", "always":
	default:
		return "", fmt.Errorf("bad CanonicalizeHostname value %q", mode)
	}
	if mode != "always" {
		for _, k := range []string{"proxyjump", "proxycommand"} {
			if v, ok := st.get(k); ok && !strings.EqualFold(v, "none") {
				return "", nil // the proxy resolves the name
			}
		}
	}
	if net.ParseIP(strings.Trim(name, "[]")) != nil {
		return "", nil
	}
	lookup := o.lookupHost
	if lookup == nil {
		lookup = net.DefaultResolver.LookupHost
	}
	resolves := func(fqdn string) (bool, error) {
		_, err := lookup(ctx, fqdn)
		if ctx.Err() != nil {
			return false, fmt.Errorf("canonicalize %s: %w", name, ctx.Err())
		}
		return err == nil, nil
	}
	if strings.HasSuffix(name, ".") {
		ok, err := resolves(name)
		if err != nil || !ok {
			return "", err
		}
		return strings.TrimSuffix(name, "."), nil
	}
	maxDots := 1
	if v, ok := st.get("canonicalizemaxdots"); ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return "", fmt.Errorf("bad CanonicalizeMaxDots value %q", v)
		}
		maxDots = n
	}
	if strings.Count(name, ".") > maxDots {
		return "", nil
	}
	domains, _ := st.get("canonicaldomains")
	for _, d := range strings.Fields(domains) {
		if strings.EqualFold(d, "none") {
			break
		}
		fqdn := name + "." + strings.TrimSuffix(d, ".")
		ok, err := resolves(fqdn + ".")
		if err != nil {
			return "", err
		}
		if ok {
			return fqdn, nil
		}
	}
	if v, _ := st.get("canonicalizefallbacklocal"); strings.EqualFold(v, "no") || strings.EqualFold(v, "false") {
		return "", fmt.Errorf("could not resolve host %q in any of CanonicalDomains (CanonicalizeFallbackLocal no)", name)
	}
	return "", nil
}

// target turns collected settings into a Target.
func (st *settings) target(host, home, localU string, nExplicit int) (*Target, error) {
	t := &Target{Alias: host, explicitIdentities: nExplicit}
	bad := func(key, v string, err error) error {
		return fmt.Errorf("sshdial: %s: bad %s value %q: %v", host, key, v, err)
	}
	t.HostName = strings.ToLower(host)
	if v, ok := st.get("hostname"); ok {
		h, err := expandHostName(v, strings.ToLower(host))
		if err != nil {
			return nil, bad("HostName", v, err)
		}
		t.HostName = h
	}
	t.Port = 22
	if v, ok := st.get("port"); ok {
		p, err := parsePort(v)
		if err != nil {
			return nil, bad("Port", v, err)
		}
		t.Port = p
	}
	t.User = localU
	if v, ok := st.get("user"); ok {
		t.User = v
	}
	var err error
	yesno := func(key string, dst *bool) {
		if err != nil {
			return
		}
		if v, ok := st.get(key); ok {
			switch strings.ToLower(v) {
			case "yes", "true":
				*dst = true
			case "no", "false":
				*dst = false
			default:
				err = bad(key, v, errors.New("want yes or no"))
			}
		}
	}
	yesno("identitiesonly", &t.IdentitiesOnly)
	yesno("hashknownhosts", &t.HashKnownHosts)
	yesno("batchmode", &t.BatchMode)
	if err != nil {
		return nil, err
	}

	x := &expander{home: home, vars: map[byte]string{
		'd': home,
		'h': t.HostName,
		'n': host,
		'p': strconv.Itoa(t.Port),
		'r': t.User,
		'u': localU,
		'i': strconv.Itoa(os.Getuid()),
		'%': "%",
	}}
	x.vars['k'] = host
	if v, ok := st.get("hostkeyalias"); ok {
		t.HostKeyAlias = v
		x.vars['k'] = v
	}
	x.vars['l'], x.vars['L'] = localHostNames()
	if st.proxy == "proxyjump" {
		x.vars['j'] = st.single["proxyjump"]
	} else {
		x.vars['j'] = ""
	}
	x.vars['C'] = connectionHash(x.vars['l'], t.HostName, x.vars['p'], t.User)

	ids := st.multi["identityfile"]
	if len(ids) == 0 {
		ids = defaultIdentityFiles
	}
	for _, f := range ids {
		p, err := x.path(f)
		if err != nil {
			return nil, bad("IdentityFile", f, err)
		}
		t.IdentityFiles = append(t.IdentityFiles, p)
	}
	for _, f := range st.multi["certificatefile"] {
		p, err := x.path(f)
		if err != nil {
			return nil, bad("CertificateFile", f, err)
		}
		t.CertificateFiles = append(t.CertificateFiles, p)
	}
	if v, ok := st.get("identityagent"); ok {
		switch {
		case strings.EqualFold(v, "none"):
			t.IdentityAgent = "none"
		case v == "SSH_AUTH_SOCK":
			t.IdentityAgent = ""
		case strings.HasPrefix(v, "$") && !strings.HasPrefix(v, "${"):
			t.IdentityAgent = os.Getenv(v[1:])
			if t.IdentityAgent == "" {
				t.IdentityAgent = "none"
			}
		default:
			p, err := x.path(v)
			if err != nil {
				return nil, bad("IdentityAgent", v, err)
			}
			t.IdentityAgent = p
		}
	}
	for _, kf := range []struct {
		key  string
		def  []string
		dest *[]string
	}{
		{"userknownhostsfile", defaultUserKnownHosts, &t.UserKnownHostsFiles},
		{"globalknownhostsfile", defaultGlobalKnownHosts, &t.GlobalKnownHostsFiles},
	} {
		files := kf.def
		if v, ok := st.get(kf.key); ok {
			files, err = splitArgs(v)
			if err != nil {
				return nil, bad(kf.key, v, err)
			}
			if len(files) == 1 && strings.EqualFold(files[0], "none") {
				files = nil
			}
		}
		*kf.dest = []string{}
		for _, f := range files {
			p, err := x.path(f)
			if err != nil {
				return nil, bad(kf.key, f, err)
			}
			*kf.dest = append(*kf.dest, p)
		}
	}
	t.StrictHostKeyChecking = "ask"
	if v, ok := st.get("stricthostkeychecking"); ok {
		switch strings.ToLower(v) {
		case "yes", "true":
			t.StrictHostKeyChecking = "yes"
		case "no", "false", "off":
			t.StrictHostKeyChecking = "no"
		case "ask":
			t.StrictHostKeyChecking = "ask"
		case "accept-new":
			t.StrictHostKeyChecking = "accept-new"
		default:
			return nil, bad("StrictHostKeyChecking", v, errors.New("want yes, accept-new, no or ask"))
		}
	}
	switch st.proxy {
	case "proxyjump":
		v := st.single["proxyjump"]
		hops, none, err := parseJumpList(v)
		if err != nil {
			return nil, bad("ProxyJump", v, err)
		}
		if !none {
			for _, part := range strings.Split(v, ",") {
				t.ProxyJump = append(t.ProxyJump, strings.TrimSpace(part))
			}
			_ = hops
		}
	case "proxycommand":
		v := st.single["proxycommand"]
		if !strings.EqualFold(v, "none") {
			px := &expander{home: home, vars: map[byte]string{
				'h': t.HostName, 'n': host, 'p': x.vars['p'], 'r': t.User, '%': "%",
			}}
			cmd, err := px.expand(v, false)
			if err != nil {
				return nil, bad("ProxyCommand", v, err)
			}
			t.ProxyCommand = cmd
		}
	}
	for _, d := range []struct {
		key  string
		dest *time.Duration
	}{
		{"connecttimeout", &t.ConnectTimeout},
		{"serveraliveinterval", &t.ServerAliveInterval},
	} {
		if v, ok := st.get(d.key); ok && !strings.EqualFold(v, "none") {
			dur, err := parseSSHTime(v)
			if err != nil {
				return nil, bad(d.key, v, err)
			}
			*d.dest = dur
		}
	}
	if v, ok := st.get("bindaddress"); ok {
		if net.ParseIP(v) == nil {
			return nil, bad("BindAddress", v, errors.New("want an IP address"))
		}
		t.BindAddress = v
	}
	t.AddressFamily = "any"
	if v, ok := st.get("addressfamily"); ok {
		switch v = strings.ToLower(v); v {
		case "any", "inet", "inet6":
			t.AddressFamily = v
		default:
			return nil, bad("AddressFamily", v, errors.New("want any, inet or inet6"))
		}
	}
	t.ConnectionAttempts = 1
	if v, ok := st.get("connectionattempts"); ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return nil, bad("ConnectionAttempts", v, errors.New("want a number of at least 1"))
		}
		t.ConnectionAttempts = n
	}
	for _, line := range st.multi["sendenv"] {
		words, err := splitArgs(line)
		if err != nil {
			return nil, bad("SendEnv", line, err)
		}
		for _, w := range words {
			if pat, ok := strings.CutPrefix(w, "-"); ok {
				t.SendEnv = slices.DeleteFunc(t.SendEnv, func(p string) bool { return matchGlob(p, pat) })
			} else if !slices.Contains(t.SendEnv, w) {
				t.SendEnv = append(t.SendEnv, w)
			}
		}
	}
	if v, ok := st.get("setenv"); ok {
		words, err := splitArgs(v)
		if err != nil {
			return nil, bad("SetEnv", v, err)
		}
		seen := map[string]bool{}
		for _, w := range words {
			name, _, ok := strings.Cut(w, "=")
			if !ok || name == "" {
				return nil, bad("SetEnv", v, fmt.Errorf("%q is not NAME=VALUE", w))
			}
			if !seen[name] { // the first value of a name wins
				seen[name] = true
				t.SetEnv = append(t.SetEnv, w)
			}
		}
	}
	t.ControlMaster = "no"
	if v, ok := st.get("controlmaster"); ok {
		switch v = strings.ToLower(v); v {
		case "yes", "true":
			t.ControlMaster = "yes"
		case "no", "false":
			t.ControlMaster = "no"
		case "ask", "auto", "autoask":
			t.ControlMaster = v
		default:
			return nil, bad("ControlMaster", v, errors.New("want yes, no, ask, auto or autoask"))
		}
	}
	if v, ok := st.get("controlpath"); ok && !strings.EqualFold(v, "none") {
		p, err := x.path(v)
		if err != nil {
			return nil, bad("ControlPath", v, err)
		}
		t.ControlPath = p
	}
	t.ServerAliveCountMax = 3
	if v, ok := st.get("serveralivecountmax"); ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return nil, bad("ServerAliveCountMax", v, errors.New("want a number"))
		}
		t.ServerAliveCountMax = n
	}
	for _, a := range []struct {
		key  string
		def  []string
		dest *[]string
	}{
		{"kexalgorithms", defaultKex, &t.KexAlgorithms},
		{"hostkeyalgorithms", defaultHostKeyAlgos, &t.HostKeyAlgorithms},
		{"pubkeyacceptedalgorithms", defaultPubkeyAlgos, &t.PubkeyAcceptedAlgorithms},
		{"ciphers", defaultCiphers, &t.Ciphers},
		{"macs", defaultMACs, &t.MACs},
	} {
		if v, ok := st.get(a.key); ok {
			list, err := algorithmList(v, a.def)
			if err != nil {
				return nil, bad(a.key, v, err)
			}
			*a.dest = list
		}
	}
	return t, nil
}

// expandHostName expands HostName's tokens: %h (the host as given, in lower
// case like ssh) and %%.
func expandHostName(v, host string) (string, error) {
	x := &expander{vars: map[byte]string{'h': host, '%': "%"}}
	return x.expand(v, false)
}

// expander expands ~, %x tokens and ${ENV} like ssh does for file names.
type expander struct {
	home string
	vars map[byte]string
}

// path expands a file name: a leading ~ or ~user, then %x tokens and
// ${ENV} variables.
func (x *expander) path(s string) (string, error) {
	s, err := expandTildeUser(s, x.home)
	if err != nil {
		return "", err
	}
	return x.expand(s, true)
}

// expand replaces %x tokens (an unknown one is an error, like ssh) and,
// with env, ${NAME} environment variables (unset ones are an error).
func (x *expander) expand(s string, env bool) (string, error) {
	if !strings.ContainsAny(s, "%$") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '%':
			if i+1 >= len(s) {
				return "", errors.New("invalid format: '%' at the end")
			}
			i++
			v, ok := x.vars[s[i]]
			if !ok {
				return "", fmt.Errorf("unknown key %%%c", s[i])
			}
			b.WriteString(v)
		case c == '$' && env && i+1 < len(s) && s[i+1] == '{':
			end := strings.IndexByte(s[i+2:], '}')
			if end < 0 {
				return "", errors.New("unterminated ${")
			}
			name := s[i+2 : i+2+end]
			if name == "" {
				return "", errors.New("empty ${}")
			}
			v, ok := os.LookupEnv(name)
			if !ok {
				return "", fmt.Errorf("environment variable %s not set", name)
			}
			b.WriteString(v)
			i += 2 + end
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

// expandTilde replaces a leading "~" or "~/" with home.
func expandTilde(s, home string) string {
	if s == "~" {
		return home
	}
	if strings.HasPrefix(s, "~/") {
		return filepath.Join(home, s[2:])
	}
	return s
}

// expandTildeUser is expandTilde plus "~user/...".
func expandTildeUser(s, home string) (string, error) {
	if !strings.HasPrefix(s, "~") || s == "~" || strings.HasPrefix(s, "~/") {
		return expandTilde(s, home), nil
	}
	name, rest, _ := strings.Cut(s[1:], "/")
	u, err := user.Lookup(name)
	if err != nil {
		return "", fmt.Errorf("unknown user %s in %s", name, s)
	}
	return filepath.Join(u.HomeDir, rest), nil
}

// parseSSHTime parses ssh's time format: a plain number of seconds, or a
// sequence of number+unit with units s, m, h, d, w (any case).
func parseSSHTime(s string) (time.Duration, error) {
	if s == "" {
		return 0, errors.New("empty time")
	}
	var total int64
	const max = int64(1<<31 - 1)
	for s != "" {
		i := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == 0 {
			return 0, fmt.Errorf("bad time %q", s)
		}
		n, err := strconv.ParseInt(s[:i], 10, 64)
		if err != nil || n > max {
			return 0, fmt.Errorf("time %q out of range", s)
		}
		mult := int64(1)
		if i < len(s) {
			switch s[i] {
			case 's', 'S':
			case 'm', 'M':
				mult = 60
			case 'h', 'H':
				mult = 3600
			case 'd', 'D':
				mult = 86400
			case 'w', 'W':
				mult = 604800
			default:
				return 0, fmt.Errorf("bad time unit in %q", s)
			}
			i++
		}
		if n > (max-total)/mult {
			return 0, errors.New("time out of range")
		}
		total += n * mult
		s = s[i:]
	}
	return time.Duration(total) * time.Second, nil
}

// algorithmList applies an OpenSSH algorithm list value to defaults:
// "+a,b" appends, "-a,b*" removes (patterns allowed), "^a,b" puts first,
// anything else replaces.
func algorithmList(v string, defaults []string) ([]string, error) {
	if v == "" {
		return nil, errors.New("empty list")
	}
	mode := v[0]
	if mode == '+' || mode == '-' || mode == '^' {
		v = v[1:]
	}
	var items []string
	for _, it := range strings.Split(v, ",") {
		if it = strings.TrimSpace(it); it == "" {
			return nil, errors.New("empty algorithm name")
		}
		items = append(items, it)
	}
	contains := func(list []string, s string) bool {
		for _, x := range list {
			if x == s {
				return true
			}
		}
		return false
	}
	var out []string
	switch mode {
	case '+':
		out = append(out, defaults...)
		for _, it := range items {
			if !contains(out, it) {
				out = append(out, it)
			}
		}
	case '-':
		for _, d := range defaults {
			if !matchPatternList(d, strings.Join(items, ","), false) {
				out = append(out, d)
			}
		}
	case '^':
		out = append(out, items...)
		for _, d := range defaults {
			if !contains(out, d) {
				out = append(out, d)
			}
		}
	default:
		out = items
	}
	return out, nil
}

// supportedOnly keeps the algorithms golang.org/x/crypto/ssh implements.
func supportedOnly(list []string, kind string) []string {
	sup, insec := ssh.SupportedAlgorithms(), ssh.InsecureAlgorithms()
	var have []string
	switch kind {
	case "kex":
		have = append(append(sup.KeyExchanges, insec.KeyExchanges...), "curve25519-sha256@libssh.org")
	case "cipher":
		have = append(sup.Ciphers, insec.Ciphers...)
	case "mac":
		have = append(sup.MACs, insec.MACs...)
	case "hostkey":
		have = append(sup.HostKeys, insec.HostKeys...)
	}
	var out []string
	for _, a := range list {
		for _, h := range have {
			if a == h {
				out = append(out, a)
				break
			}
		}
	}
	return out
}

// checkCommandLineNames refuses, like ssh 9.6 and later, a destination host
// or user name (from the destination or -l) holding characters a shell
// would interpret: ProxyCommand gets them through sh -c as %h, %n and %r.
// Names from configuration files are trusted, as by ssh.
func checkCommandLineNames(host string, users ...string) error {
	if strings.HasPrefix(host, "-") || strings.ContainsFunc(host, func(r rune) bool {
		return r < ' ' || r == 0x7f || strings.ContainsRune(" \t'`\"$\\;&<>|(){}", r)
	}) {
		return fmt.Errorf("hostname %q contains invalid characters", host)
	}
	for _, u := range users {
		if strings.HasPrefix(u, "-") || strings.HasSuffix(u, "\\") || strings.ContainsAny(u, "'`\";&<>|(){}\n\r\x00") ||
			strings.Contains(u, " -") || strings.Contains(u, "\t-") {
			return fmt.Errorf("remote user name %q contains invalid characters", u)
		}
	}
	return nil
}

// Env returns the environment variables to send to the server for t, as
// ssh sends them: first those of environ (NAME=VALUE, as os.Environ
// returns) whose names match a SendEnv pattern, then SetEnv's.
func (t *Target) Env(environ []string) [][2]string {
	var out [][2]string
	if len(t.SendEnv) > 0 {
		for _, kv := range environ {
			name, value, ok := strings.Cut(kv, "=")
			if !ok || name == "" {
				continue
			}
			if slices.ContainsFunc(t.SendEnv, func(p string) bool { return matchGlob(name, p) }) {
				out = append(out, [2]string{name, value})
			}
		}
	}
	for _, kv := range t.SetEnv {
		name, value, _ := strings.Cut(kv, "=")
		out = append(out, [2]string{name, value})
	}
	return out
}

// ControlSocket returns the ControlMaster socket through which ssh would
// first try to run a session for t, as a client of a master already
// running: ControlPath when ControlMaster is no, auto or autoask; "" when
// there is no ControlPath, or when ControlMaster (yes or ask) would make
// ssh a master itself, which a Go program cannot be for other ssh clients.
func (t *Target) ControlSocket() string {
	switch t.ControlMaster {
	case "yes", "ask":
		return ""
	}
	return t.ControlPath
}

// localHostNames returns this machine's name and its first label, ssh's
// %l and %L ("" when the name cannot be read).
func localHostNames() (long, short string) {
	long, _ = os.Hostname()
	short, _, _ = strings.Cut(long, ".")
	return long, short
}

// connectionHash is ssh's %C: the SHA-1, in hex, of the local host name,
// the host name, the port and the remote user.
func connectionHash(local, host, port, user string) string {
	sum := sha1.Sum([]byte(local + host + port + user))
	return hex.EncodeToString(sum[:])
}
