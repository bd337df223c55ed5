// Package sshdial resolves a host alias through ssh_config and connects to it
// with golang.org/x/crypto/ssh, the way OpenSSH's ssh (9.2) would.
//
// Resolve reads the files ssh reads (~/.ssh/config then
// /etc/ssh/ssh_config, or only Options.ConfigFile like ssh -F), applies
// command-line style Options (-l, -p, -i, -J, -o) and returns a Target: what
// `ssh -G` prints, with file names expanded. Dial connects to a Target:
// TCP (with TCP_NODELAY), ProxyJump hops or ProxyCommand, host key checking
// against known_hosts, public key authentication from ssh-agent and
// identity files, and keepalives.
//
// Configuration files are parsed with github.com/kevinburke/ssh_config
// (ssh_config.Decode, and Config.Get/GetAll, which return errors). For most
// keywords the first value obtained wins; IdentityFile and CertificateFile
// accumulate; command-line Options come before the files. A parsed
// configuration is reused by resolutions within 2 seconds (a fan-out parses
// it once) unless a file it read changed size or modification time.
// known_hosts files are parsed once per process and again only when their
// bytes differ from those parsed (each Dial compares them); identity files
// once per distinct contents. An encrypted identity file's passphrase is
// asked once per process, and questions on the terminal one at a time.
//
// # Supported keywords
//
//   - Host, with patterns, '*' and '?' wildcards and '!' negation (matched
//     by ssh_config; lines using '?' are matched by this package, because
//     ssh_config lets '?' match zero characters).
//   - Match with all, host, originalhost, user, localuser, exec, canonical
//     and final (and '!' negation); "host" is matched against the host name
//     after HostName substitution, like ssh. "final" and "canonical" hold
//     only in the final pass (below). "exec" runs its command like ssh, only
//     while the criteria before it hold: through $SHELL (or /bin/sh) -c,
//     with the %C %L %d %h %k %l %n %p %r %u %% tokens of what is known so
//     far, stdin and stdout on /dev/null, stderr to Options.Warn; it holds
//     when the command exits with status 0. The command runs once per
//     resolution (a fan-out runs it once per host, as many ssh processes
//     would) and, with ResolveContext, is killed with its process group when
//     the context ends, which fails the resolution.
//   - CanonicalizeHostname (yes, always), CanonicalDomains,
//     CanonicalizeMaxDots and CanonicalizeFallbackLocal, like ssh: for a
//     direct connection (or any, with "always"), a host name with at most
//     CanonicalizeMaxDots dots becomes the first name.domain, for each of
//     CanonicalDomains, that the resolver knows (ResolveContext's context
//     bounds the lookups); a name ending in a dot loses it when it
//     resolves. CNAMEs are not followed (CanonicalizePermittedCNAMEs is
//     ignored).
//   - A final pass, like ssh's, when a Match final line is present or
//     CanonicalizeHostname is on: the files are read again with Host
//     patterns matched against the host name the first pass settled on
//     (HostName substituted, then canonicalized), "Match canonical" and
//     "Match final" holding; values set in the first pass stay.
//   - Include, with globs, nested up to 16 levels, honouring the enclosing
//     Host/Match block. Relative paths are taken from ~/.ssh (user files,
//     where ~ is Options.HomeDir or $HOME) or /etc/ssh (the system file).
//     This package handles Include itself: ssh_config would resolve it
//     against the password database's home and treat every decoded file as
//     a user file.
//   - HostName (%h and %% tokens), Port, User.
//   - IdentityFile (default ~/.ssh/id_rsa, id_ecdsa, id_ecdsa_sk,
//     id_ed25519, id_ed25519_sk, id_xmss, id_dsa, as in ssh 9.2),
//     IdentitiesOnly, IdentityAgent (a path, SSH_AUTH_SOCK, $VAR or none),
//     CertificateFile (and <identity>-cert.pub beside an identity file).
//     An identity file may also be just a public key (or a missing private
//     key with its .pub): it then selects the matching agent key, which is
//     what IdentitiesOnly needs with keys kept only in an agent.
//   - UserKnownHostsFile, GlobalKnownHostsFile, StrictHostKeyChecking (yes,
//     accept-new, no/off, ask), HostKeyAlias, HashKnownHosts.
//   - ProxyJump (comma-separated hops, ssh:// URIs, none) and ProxyCommand
//     (run as sh -c "exec ..."; %h %n %p %r %% tokens); the first of the two
//     obtained wins, like ssh.
//   - ConnectTimeout, ServerAliveInterval (ssh time formats such as 90 or
//     1m30s), ServerAliveCountMax.
//   - SendEnv (patterns, accumulating; "-PATTERN" removes) and SetEnv (the
//     first line wins, and in it the first value of a name): Target.Env
//     lists what to send, as ssh sends it; the caller sends it.
//   - ControlPath (expanded like IdentityFile; none) and ControlMaster
//     (yes/true, no/false, ask, auto, autoask): Target.ControlSocket is
//     the socket through which ssh would first try an existing master
//     (with no, auto and autoask); the caller uses it (remote does, with
//     internal/sshmux) and connects directly when no master answers. A
//     ProxyJump host's master is used by Dial itself: the connection to
//     the host behind it is asked of the master (as ssh -J's ssh -W does),
//     with no login of its own to the jump host; when none answers there,
//     the jump host is connected to directly (a warning first when the
//     socket is not a master's), and a forwarding the master refuses is an
//     error, as for ssh. This package never starts a master: with yes or
//     ask, ssh would become one, and a Go client cannot serve other ssh
//     processes.
//   - For direct TCP connections: BindAddress (an IP address: the local
//     address), AddressFamily (any, inet, inet6) and ConnectionAttempts
//     (tries a second apart).
//   - HostKeyAlgorithms: when set, only those x/crypto implements are
//     offered, in the configured order (an error if none is left); when
//     not, x/crypto's, the types recorded in known_hosts for the host
//     first, as ssh orders its defaults.
//   - KexAlgorithms, Ciphers and MACs, including the +, - and ^ forms;
//     algorithms that golang.org/x/crypto/ssh does not implement are dropped
//     at Dial time (an error if none is left).
//   - PubkeyAcceptedAlgorithms (and its older name PubkeyAcceptedKeyTypes),
//     including the +, - and ^ forms: a key none of whose signature
//     algorithms is in the list is not offered (AuthError.Skipped names
//     it), and an RSA key signs only with the listed ones. The default is
//     ssh 9.2's, without ssh-rsa: an RSA key signs with rsa-sha2-512 or
//     rsa-sha2-256, so a server too old for those (OpenSSH before 7.2)
//     needs PubkeyAcceptedAlgorithms +ssh-rsa, as with ssh.
//   - BatchMode (no prompts at all).
//
// File names (IdentityFile, CertificateFile, IdentityAgent,
// UserKnownHostsFile, GlobalKnownHostsFile) expand ~, ~user, ${ENV} and the
// tokens %% %C %d %h %i %j %k %L %l %n %p %r %u.
//
// # Not supported
//
// Every other keyword is read without error and ignored; in particular:
// password, keyboard-interactive, GSSAPI and host-based authentication;
// CanonicalizePermittedCNAMEs; CheckHostIP (ssh 9.2's default, no, is
// what this package does); UpdateHostKeys; VerifyHostKeyDNS; KnownHostsCommand;
// ControlPersist (no master is started); forwardings;
// AddKeysToAgent; FIDO (sk-) keys and XMSS keys in files (they can still be
// used through ssh-agent). File permission checks of configuration files
// are not done.
//
// # Differences from ssh
//
//   - A host key that differs from the recorded one is always refused, even
//     with StrictHostKeyChecking=no (ssh connects then, with password and
//     keyboard-interactive authentication disabled).
//   - With StrictHostKeyChecking=no, an unknown key is not recorded; a
//     warning goes to Options.Warn on every connection instead.
//   - A missing -i file is an error (ssh warns and goes on).
//   - An encrypted identity file that the server would accept, that no agent
//     key matches and that cannot be decrypted (no terminal) makes Dial fail
//     with a KeyFileError (ssh would skip it and likely fail with
//     "Permission denied").
//   - Options.User and Options.Port win over -o User/Port (ssh lets
//     whichever comes first on the command line win).
//   - Keepalive requests are sent every ServerAliveInterval whether or not
//     other traffic flows (ssh sends them only on an idle connection).
//   - ProxyJump hops are dialed in-process over the previous hop's
//     connection; like ssh's "ssh -J", a hop gets the -F file but not the
//     other command-line options. Connections made through the same hops
//     (the same specs resolving to the same targets) share one connection
//     to each hop while any of them is open, as with ssh's ControlMaster;
//     each ssh -J makes its own.
package sshdial
