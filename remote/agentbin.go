package remote

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/toworker/toworker/internal/sshdial"
	"github.com/toworker/toworker/internal/wire"
)

// AgentOptions choose the agent binary put on hosts, where it is kept there,
// and as whom it runs. The zero value ships the master's own executable
// (which must call agent.ServeIfAgent first thing in main) to hosts of the
// master's platform, caches it in the login user's
// ${XDG_CACHE_HOME:-$HOME/.cache}/toworker and runs it as the login user.
type AgentOptions struct {
	// Binary is the agent for hosts of the master's own OS and
	// architecture. Empty means the running executable.
	Binary string
	// Dir holds agents for other platforms, named agent-GOOS-GOARCH (as
	// `make agents` builds them). Empty means none.
	Dir string
	// CacheDir is the directory on the host that holds cached agents, an
	// absolute path. Empty means ${XDG_CACHE_HOME:-$HOME/.cache}/toworker
	// of the user the agent runs as (see Become).
	CacheDir string
	// Path is the absolute path of an agent already installed on the
	// hosts. When set, that file is run instead of a cached or uploaded
	// one, but only after its SHA-256 has been checked against the master's
	// agent for the host's platform (Binary or Dir): a different file is
	// an error and is never run. Nothing is uploaded and the cache is not
	// used. The file must be owned by root or by the user the agent runs as
	// and must not be writable by its group or others (the check and the
	// exec are two steps). Empty means upload to the cache.
	Path string
	// Become, when set, is a user name: the agent, and so every job on the
	// connection, runs as that user, started through `sudo -n -u Become`
	// (or `doas -n -u Become` on hosts without sudo). No password is ever
	// typed: the login user needs a rule that lets it run /bin/sh as that
	// user without a password (sudoers NOPASSWD, doas.conf nopass);
	// otherwise connecting fails at once with an error wrapping ErrBecome.
	// The agent cache is then the Become user's own, so that the file run
	// belongs to who runs it: CacheDir if set, else ~Become/.cache/toworker
	// (the home directory from the password database; XDG_CACHE_HOME is
	// ignored, because what sshd passes on is the login user's). Empty
	// means run as the login user.
	Become string
	// KeepVersions is how many agent files the cache keeps. Whenever the
	// bootstrap adds one, it removes the least recently used beyond that
	// number (the agent being started is always kept; every start marks
	// its file used). Zero means 3; negative means never remove any.
	// On Linux an agent whose file is removed while it runs (another
	// master's upload pruned it) goes on starting workers from the binary
	// it runs.
	KeepVersions int
	// StdinOnly sends a new connection's first frames (the master's hello
	// and the first call) only on the session's stdin. By default they
	// also travel with the exec, in the environment variable LC_TOWORKER,
	// which saves a round trip where sshd accepts it (AcceptEnv LC_*, the
	// default of Debian and Ubuntu): OpenSSH lets stdin data through only
	// once the command runs. The agent removes the variable before it
	// starts anything, but the first call's input is then part of the
	// environment sshd gave the session, which the same user and root can
	// read, and which sshd logs at LogLevel DEBUG2 and above. Set
	// StdinOnly when that input must never be there.
	StdinOnly bool

	// kernelInfo is the directory the bootstrap reads the host's platform
	// from (ostype and arch, as Linux publishes them), before it falls back
	// to running uname; empty means /proc/sys/kernel. Tests point it
	// elsewhere to play other platforms.
	kernelInfo string
}

// defaultKeepVersions is KeepVersions' zero value.
const defaultKeepVersions = 3

// notePrefix starts a line the bootstrap prints to tell the master
// something it should pass on to the user (a fallback taken) without
// failing.
const notePrefix = "toworker-note "

// platform is a GOOS/GOARCH pair and how uname -sm names it.
type platform struct{ goos, goarch string }

func (p platform) String() string { return p.goos + "/" + p.goarch }

// unamePlatforms maps `uname -sm` output to Go platforms.
var unamePlatforms = map[string]platform{
	"Linux x86_64":    {"linux", "amd64"},
	"Linux aarch64":   {"linux", "arm64"},
	"Linux arm64":     {"linux", "arm64"},
	"Darwin x86_64":   {"darwin", "amd64"},
	"Darwin arm64":    {"darwin", "arm64"},
	"FreeBSD amd64":   {"freebsd", "amd64"},
	"FreeBSD arm64":   {"freebsd", "arm64"},
	"FreeBSD aarch64": {"freebsd", "arm64"},
}

// unameNames lists unamePlatforms' keys in a fixed order, so that the
// script is the same from run to run.
var unameNames = func() []string {
	var names []string
	for u := range unamePlatforms {
		names = append(names, u)
	}
	sort.Strings(names)
	return names
}()

// agentBinary is one agent file, hashed once and compressed once per
// process, each when first needed.
type agentBinary struct {
	path string
	plat platform

	hashOnce sync.Once
	hash     string // hex SHA-256 of the uncompressed binary
	hashErr  error
	hashed   atomic.Bool // loadHash has succeeded: hash may be read without it

	gzOnce sync.Once
	gz     []byte // gzip of the binary, as uploaded
	gzErr  error
}

// loadHash computes the binary's hash, or takes it from the master's
// cache (cachedHash) while the file is the one hashed.
func (b *agentBinary) loadHash() error {
	b.hashOnce.Do(func() {
		f, err := os.Open(b.path)
		if err != nil {
			b.hashErr = fmt.Errorf("read agent binary: %w", err)
			return
		}
		defer f.Close()
		id := ""
		if fi, err := f.Stat(); err == nil {
			if fid, ok := fileIdentity(fi); ok {
				id = b.path + "\x00" + fid
			}
		}
		if h := readCachedHash(id); h != "" {
			b.hash = h
			b.hashed.Store(true)
			return
		}
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			b.hashErr = fmt.Errorf("read agent binary %s: %w", b.path, err)
			return
		}
		b.hash = hex.EncodeToString(h.Sum(nil))
		b.hashed.Store(true)
		writeCachedHash(id, b.hash)
	})
	return b.hashErr
}

// The master also keeps the SHA-256 of its agents, so that a new master
// process (each toworker CLI run) does not hash its 6-7 MiB binary again
// (4-5 ms) before it can name the agent to the hosts. An entry is named by
// the SHA-256 of the binary's path and identity (fileIdentity: device,
// inode, size, modification and change times), so that a rebuilt or
// rewritten binary misses it; the change time cannot be set back, so a
// file cannot take on the identity of the one hashed. Were an entry wrong
// all the same, a host would refuse the upload (it checks what it
// receives against the hash), or the master would, when it compresses
// the binary and finds another hash.
const hashCacheKeep = 16 // entries kept, newest first

// hashCacheName is the file name of the hash of the file with identity id.
func hashCacheName(id string) string {
	sum := sha256.Sum256([]byte(id))
	return "sha256-" + hex.EncodeToString(sum[:])
}

// readCachedHash returns the cached hash of the file with identity id, or
// "" (also for an empty id: no identity known).
func readCachedHash(id string) string {
	dir, err := gzipCacheDir()
	if err != nil || id == "" {
		return ""
	}
	file := filepath.Join(dir, hashCacheName(id))
	b, err := os.ReadFile(file)
	if err != nil {
		return ""
	}
	h := strings.TrimSpace(string(b))
	if _, err := hex.DecodeString(h); err != nil || len(h) != 2*sha256.Size {
		return ""
	}
	now := time.Now()
	os.Chtimes(file, now, now) // used: kept by writeCacheEntry's pruning
	return h
}

// writeCachedHash stores hash as that of the file with identity id, best
// effort, and removes the oldest entries beyond hashCacheKeep.
func writeCachedHash(id, hash string) {
	dir, err := gzipCacheDir()
	if err != nil || id == "" || os.MkdirAll(dir, 0o700) != nil {
		return
	}
	writeCacheEntry(dir, hashCacheName(id), []byte(hash+"\n"), "sha256-", hashCacheKeep)
}

// load computes the hash and the compressed upload. The hash is that of
// the bytes compressed, whatever happened to the file in between; an
// upload from the master's cache was compressed from such bytes by the
// process that stored it.
func (b *agentBinary) load() error {
	if err := b.loadHash(); err != nil {
		return err
	}
	b.gzOnce.Do(func() {
		if gz := readCachedGzip(b.hash); gz != nil {
			b.gz = gz
			return
		}
		raw, err := os.ReadFile(b.path)
		if err != nil {
			b.gzErr = fmt.Errorf("read agent binary: %w", err)
			return
		}
		sum := sha256.Sum256(raw)
		if hex.EncodeToString(sum[:]) != b.hash {
			b.gzErr = fmt.Errorf("agent binary %s changed while the master runs: restart the master", b.path)
			return
		}
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
		zw.Write(raw)
		zw.Close()
		b.gz = buf.Bytes()
		writeCachedGzip(b.hash, b.gz)
	})
	return b.gzErr
}

// The master keeps the compressed upload of its agents in its own cache
// directory, so that a new master process (each toworker CLI run) does not
// compress its 6-7 MiB binary again before an upload (about 100 ms). An
// entry is named by the agent's SHA-256 and that of its own bytes, and is
// used only while its bytes have the latter: checking that costs a few
// milliseconds where decompressing it would cost 30-50. What the entry
// decompresses to is checked by the host against the agent's SHA-256, as
// every upload is, before it is run.
const gzipCacheKeep = 4 // entries kept, newest first

func gzipCacheDir() (string, error) {
	d, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(d, "toworker-master"), nil // not the agent cache of a host that is this machine
}

// gzipCacheName is the file name of the upload gz of the agent with hash.
func gzipCacheName(hash string, gz []byte) string {
	sum := sha256.Sum256(gz)
	return hash + "-" + hex.EncodeToString(sum[:]) + ".gz"
}

// readCachedGzip returns the cached gzip of the agent with hash, or nil.
// Entries whose bytes do not match their name are removed.
func readCachedGzip(hash string) []byte {
	dir, err := gzipCacheDir()
	if err != nil {
		return nil
	}
	files, _ := filepath.Glob(filepath.Join(dir, hash+"-*.gz")) // hash is hex
	for _, file := range files {
		gz, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		if gzipCacheName(hash, gz) != filepath.Base(file) {
			os.Remove(file)
			continue
		}
		now := time.Now()
		os.Chtimes(file, now, now) // used: kept by writeCachedGzip's pruning
		return gz
	}
	return nil
}

// writeCachedGzip stores gz as the agent with hash's upload, best effort,
// and removes the oldest entries beyond gzipCacheKeep.
func writeCachedGzip(hash string, gz []byte) {
	dir, err := gzipCacheDir()
	if err != nil || os.MkdirAll(dir, 0o700) != nil {
		return
	}
	writeCacheEntry(dir, gzipCacheName(hash, gz), gz, "", gzipCacheKeep)
}

// writeCacheEntry writes data to dir/name through a temporary file renamed
// into place, then removes the oldest of the entries of its kind (names
// starting with prefix and ending like name) beyond keep.
func writeCacheEntry(dir, name string, data []byte, prefix string, keep int) {
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return
	}
	_, werr := f.Write(data)
	if cerr := f.Close(); werr != nil || cerr != nil || os.Rename(f.Name(), filepath.Join(dir, name)) != nil {
		os.Remove(f.Name())
		return
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	type aged struct {
		name string
		mod  time.Time
	}
	suffix := filepath.Ext(name)
	var kind []aged
	for _, e := range entries {
		n := e.Name()
		if fi, err := e.Info(); err == nil && strings.HasPrefix(n, prefix) && filepath.Ext(n) == suffix && !strings.HasPrefix(n, ".") && fi.Mode().IsRegular() {
			kind = append(kind, aged{n, fi.ModTime()})
		}
	}
	sort.Slice(kind, func(i, j int) bool { return kind[i].mod.After(kind[j].mod) })
	for _, g := range kind[min(len(kind), keep):] {
		os.Remove(filepath.Join(dir, g.name))
	}
}

// agentSet is the agents available for one AgentOptions.
type agentSet struct {
	opts   AgentOptions
	byPlat map[platform]*agentBinary
	self   *agentBinary
}

var agentSets struct {
	mu       sync.Mutex
	sets     map[AgentOptions]*agentSet
	binaries map[agentKey]*agentBinary // shared by the sets: hashed and compressed once
}

type agentKey struct {
	path string
	plat platform
}

// binaryLocked returns the process-wide agentBinary for path on p.
// agentSets.mu must be held.
func binaryLocked(path string, p platform) *agentBinary {
	k := agentKey{path, p}
	if b := agentSets.binaries[k]; b != nil {
		return b
	}
	if agentSets.binaries == nil {
		agentSets.binaries = make(map[agentKey]*agentBinary)
	}
	b := &agentBinary{path: path, plat: p}
	agentSets.binaries[k] = b
	return b
}

// agentsFor returns the (process-wide, cached) agent set for opts.
func agentsFor(opts AgentOptions) (*agentSet, error) {
	agentSets.mu.Lock()
	defer agentSets.mu.Unlock()
	if s, ok := agentSets.sets[opts]; ok {
		return s, nil
	}
	if err := checkHostPath("agent cache directory", "CacheDir", opts.CacheDir); err != nil {
		return nil, err
	}
	if err := checkHostPath("pre-installed agent", "Path", opts.Path); err != nil {
		return nil, err
	}
	if err := checkBecome(opts.Become); err != nil {
		return nil, err
	}
	s := &agentSet{opts: opts, byPlat: make(map[platform]*agentBinary)}
	self := opts.Binary
	if self == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("remote: cannot find the master's own executable to ship as the agent (%v); set AgentOptions.Binary (toworker --agent-binary) to an agent built for the hosts", err)
		}
		self = exe
	}
	if _, err := os.Stat(self); err != nil {
		return nil, fmt.Errorf("remote: cannot read the agent binary to ship (%v); set AgentOptions.Binary (toworker --agent-binary) to an agent built for the hosts", err)
	}
	here := platform{runtime.GOOS, runtime.GOARCH}
	s.self = binaryLocked(self, here)
	s.byPlat[here] = s.self
	if opts.Dir != "" {
		ents, err := os.ReadDir(opts.Dir)
		if err != nil {
			return nil, fmt.Errorf("remote: agent directory: %w", err)
		}
		for _, e := range ents {
			name, ok := strings.CutPrefix(e.Name(), "agent-")
			if !ok {
				continue
			}
			goos, goarch, ok := strings.Cut(name, "-")
			if !ok {
				continue
			}
			p := platform{goos, goarch}
			if p == here && opts.Binary == "" {
				// An explicit per-platform agent beats shipping the master.
				s.self = binaryLocked(filepath.Join(opts.Dir, e.Name()), p)
				s.byPlat[p] = s.self
				continue
			}
			if _, taken := s.byPlat[p]; !taken {
				s.byPlat[p] = binaryLocked(filepath.Join(opts.Dir, e.Name()), p)
			}
		}
	}
	if agentSets.sets == nil {
		agentSets.sets = make(map[AgentOptions]*agentSet)
	}
	agentSets.sets[opts] = s
	return s, nil
}

// checkHostPath validates a path on the host that the bootstrap puts
// between double quotes: it must be absolute and hold nothing that any
// login shell (sh, bash, zsh, tcsh, fish) would interpret there or in the
// single quotes around the script.
func checkHostPath(what, field, p string) error {
	if p == "" {
		return nil
	}
	if !strings.HasPrefix(p, "/") {
		return fmt.Errorf("remote: %s %q (AgentOptions.%s) is not an absolute path", what, p, field)
	}
	if !quotable(p) {
		return fmt.Errorf("remote: %s %q (AgentOptions.%s) contains a character the bootstrap cannot quote for every login shell (' \" \\ ! $ ` or a control character)", what, p, field)
	}
	return nil
}

// quotable reports whether s can stand between double quotes in the
// script: valid UTF-8 with no control character and none of ' " \ ! $ `.
func quotable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) || strings.ContainsRune("'\"\\!$`", r) {
			return false
		}
	}
	return true
}

// hostPlatforms remembers, for the life of the process, the platform each
// host's agent reported in its hello, keyed by platformKey: the next
// connection to the host then skips `uname` and looks for that platform's
// agent straight away.
var hostPlatforms sync.Map // string → platform

// platformKey names the machine a target reaches, whatever alias or user
// led there.
func platformKey(t *sshdial.Target) string {
	if t == nil {
		return ""
	}
	return fmt.Sprintf("%s\x00%d\x00%s\x00%s\x00%s", t.HostName, t.Port, strings.Join(t.ProxyJump, ","), t.ProxyCommand, t.HostKeyAlias)
}

// started records the platform of the agent that t's hello reports.
func (s *agentSet) started(t *sshdial.Target, h *wire.Hello) {
	if k := platformKey(t); k != "" && h != nil && h.OS != "" && h.Arch != "" {
		hostPlatforms.Store(k, platform{h.OS, h.Arch})
	}
}

// remembered returns the agent for t's remembered platform, with its hash
// loaded, or nil.
func (s *agentSet) remembered(t *sshdial.Target) *agentBinary {
	k := platformKey(t)
	if k == "" {
		return nil
	}
	v, ok := hostPlatforms.Load(k)
	if !ok {
		return nil
	}
	b := s.byPlat[v.(platform)]
	if b == nil || b.loadHash() != nil {
		return nil
	}
	return b
}

// forUname returns the agent for a host whose `uname -sm` printed u.
func (s *agentSet) forUname(u string) (*agentBinary, error) {
	p, known := unamePlatforms[strings.TrimSpace(u)]
	if b := s.byPlat[p]; known && b != nil {
		return b, b.load()
	}
	var have []string
	for p := range s.byPlat {
		have = append(have, p.String())
	}
	sort.Strings(have)
	what := fmt.Sprintf("platform %q", u)
	if known {
		what = fmt.Sprintf("platform %s (uname %q)", p, u)
	}
	return nil, fmt.Errorf("no agent binary for %s; available: %s (build more with `make agents` and set AgentOptions.Dir)", what, strings.Join(have, ", "))
}

// newTmpToken names the temporary file of one upload: unique without
// relying on the shell's pid.
var newTmpToken = func() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// script returns the one-line POSIX sh bootstrap for a connection to t (nil
// when unknown). It must mean the same when the login shell that sshd runs
// it through is sh, bash, dash, zsh, tcsh or fish, so it contains no single
// quote, backslash, exclamation mark or newline, and it is wrapped in single
// quotes for /bin/sh. The only values put in it are hexadecimal hashes,
// numbers, fixed text, uname names, and CacheDir, Path and Become, which
// agentsFor validated (quotable paths, a plain user name), and the
// test-only kernelInfo directory.
//
// Protocol on the session: the master first writes a line
// "toworker-master <version> <n>" and n bytes of frames, which the agent
// reads (the script reads stdin only to discard them before an upload).
// The same frames may also be in the environment (wire.EnvFrames), for the
// agent to start on before stdin delivers them.
//
// Cache mode (Path empty). The cache directory d is CacheDir if set; else,
// with Become, ~Become/.cache/toworker: the Become user's own, from the
// password database, because the script runs as that user and only runs
// files owned by who runs them (XDG_CACHE_HOME is ignored then: what sshd
// sets is the login user's, and sudo drops it); else
// ${XDG_CACHE_HOME:-$HOME/.cache}/toworker (a relative XDG_CACHE_HOME is
// ignored). A d that is a symlink, or exists and is not a directory owned
// by the user, is refused at once.
//
//  1. Fast path. The script picks the expected agent hash h for the
//     host's platform (platformLine: what `uname -sm` prints, read from
//     /proc/sys/kernel where Linux has it; not looked up when the master
//     remembers the host's platform)
//     and runs d/h if it is a regular file, not a symlink, owned by the
//     user, in a directory owned by the user, executable, and its SHA-256
//     is h. The hash is computed once: the stamp d/h.ok then records the
//     file's inode, size, mtime and ctime, and while `stat` reports the
//     same the file has not been written, replaced or re-moded since it was
//     verified (ctime cannot be set back by a user). The device number is
//     left out: hosts that share a home directory over NFS see one file
//     under device numbers of their own, and would each find the others'
//     stamp wrong. Before the exec the stamp is rewritten in place, never
//     truncated (1<>), so that a connection reading it at that moment, on
//     this host or another sharing the directory, reads it whole; its mtime
//     is then the last use, for pruning. Otherwise it tries the same in the
//     fallback directory
//     ${TMPDIR:-/tmp}/toworker-<uid> (where agents go when d is on a noexec
//     file system), printing a "toworker-note" line when it runs from there.
//  2. Otherwise it prepares the upload before asking for it, so that the
//     master reads a refusal instead of writing on: it creates d (mode
//     0700, umask 077; refused if it is then a symlink or someone else's)
//     and creates d/.tmp.<token> with O_EXCL (set -C) after removing
//     whatever had that name. The token is random, chosen by the master
//     for this connection. A read-only file system fails here.
//  3. It prints "toworker-need <uname -sm> <token>", the token naming the
//     cache (the first line of d/.id, which the first host to need an
//     upload into d writes; see sharedUploads), then reads the preamble line
//     and discards the n bytes of frames after it (they come before the
//     upload on stdin; asking first saves the round trip they may take to
//     arrive), and reads "<size> <sha256>" (or
//     "none none": the master has no agent for that platform) and size
//     bytes of gzip into the temporary file. A write that fails (full file
//     system) drains the rest of the upload and reports the error. The
//     answer may instead be "again <sha256>" (another host sharing d has
//     just received the agent) and the frames once more: the script then
//     runs d/h if step 1 accepts it, and otherwise writes a token of its
//     own into d/.id and asks again without one, as above.
//  4. It verifies the hash and renames the file to d/h. If d does not allow
//     running programs (test -x fails: noexec) the file goes to the
//     fallback directory instead (created 0700; refused if a symlink or not
//     the user's; an error if that is noexec too), and a "toworker-note"
//     line says so. Then it removes the least recently used hash-named
//     files of that directory beyond KeepVersions (never the one it is
//     about to run) and execs the agent; the master, once the agent's
//     marker line arrives, sends the preamble and the n bytes of frames
//     again. Not before: the script reads the upload with head -c, which
//     outside GNU coreutils (busybox, the BSDs) reads ahead of its count.
//     For the same reason the frames discarded in step 3 are read with dd,
//     one byte at a time (a few hundred bytes, unless the first call's
//     input is large).
//
// Path mode. The script looks up h for `uname -sm`, checks that Path is a
// regular file owned by root or the user and not writable by group or
// others, and runs it only if its SHA-256 is h; otherwise it prints a
// "toworker-fail" line saying why. Nothing is uploaded; for a platform the
// master has no agent for it prints "toworker-need" so that the master can
// say which platforms it has.
//
// Failures print "toworker-fail <reason>" and exit with status 101..109.
func (s *agentSet) script(t *sshdial.Target) (string, error) {
	known := s.remembered(t)
	if s.opts.Path != "" {
		known = nil // check against the host's real platform: the file is there
	}
	var cases strings.Builder
	for _, u := range unameNames {
		b := s.byPlat[unamePlatforms[u]]
		if b == nil {
			continue
		}
		// In Path mode every platform's hash is needed; otherwise other
		// platforms' hashes are learnt when first needed.
		if b != s.self && s.opts.Path == "" && !b.hashed.Load() {
			continue
		}
		if err := b.loadHash(); err != nil {
			return "", err
		}
		fmt.Fprintf(&cases, "%q) h=%s;; ", u, b.hash)
	}
	detect := []string{
		platformLine(s.opts.kernelInfo),
		`case "$p" in ` + cases.String() + `*) h=none;; esac`,
	}
	if known != nil {
		detect = []string{`p=`, `h=` + known.hash}
	}
	parts := []string{
		`umask 077`,
		`set -f`,
		// y reads the master's preamble and discards the frames after it,
		// before an upload. A started agent reads them itself.
		// Exactly n bytes: head -c is exact only in GNU coreutils; busybox's
		// and the BSDs' read stdin through stdio, and would swallow what
		// the master sends next. Byte by byte, dd is exact everywhere.
		`y() { read -r l || return 101; set -- $l; dd bs=1 count="$3" >/dev/null 2>&1; }`,
		`x() { echo "toworker-fail $1"; exit 104; }`,
		`k() { v=$( (sha256sum "$1" || shasum -a 256 "$1" || sha256 -r "$1") 2>/dev/null ); v=${v%% *}; [ -n "$v" ] || x "cannot compute a SHA-256 on this host (none of sha256sum, shasum, sha256 works)"; [ "$v" = "$2" ]; }`,
	}
	// The boss starts with GOMAXPROCS=1, the login environment's value
	// kept in wire.EnvGOMAXPROCS ("=value", or empty when unset) for it to
	// put back for workers and commands.
	oneProc := `export ` + wire.EnvGOMAXPROCS + `="${GOMAXPROCS+=}${GOMAXPROCS-}" GOMAXPROCS=1`
	if s.opts.Path != "" {
		parts = append(parts, `P="`+s.opts.Path+`"`)
		parts = append(parts, detect...)
		parts = append(parts,
			`if [ "$h" = none ]; then y || exit 101; echo "toworker-need $p"; read -r z h; exit 103; fi`,
			`[ -e "$P" ] || x "no agent at $P on this host (AgentOptions.Path): install the agent for $p there, or leave Path empty to have the master upload it"`,
			`[ -f "$P" ] || x "the pre-installed agent $P is not a regular file"`,
			`w=$(ls -lnL "$P")`,
			`set -- $w`,
			`case "$1" in ?????w*|????????w*) x "the pre-installed agent $P is writable by its group or by others: refusing to run it";; esac`,
			`[ "$3" = 0 ] || [ "$3" = "$(id -u)" ] || x "the pre-installed agent $P belongs to uid $3, neither root nor this user: refusing to run it"`,
			`k "$P" "$h" || x "the pre-installed agent $P has SHA-256 $v, but the agent of this master for $p has $h: not running it; install the matching build there, or leave AgentOptions.Path empty to have the master upload it"`,
			oneProc,
			`exec "$P" --toworker-agent boss`,
		)
		return strings.Join(parts, "; "), nil
	}

	var cache []string
	switch {
	case s.opts.CacheDir != "":
		cache = []string{`d="` + s.opts.CacheDir + `"`}
	case s.opts.Become != "":
		cache = []string{
			`c=~` + s.opts.Become + `/.cache`,
			`case "$c" in /*) ;; *) x "cannot find the home directory of ` + s.opts.Become + `";; esac`,
			`d="$c/toworker"`,
		}
	default:
		cache = []string{
			`c="${XDG_CACHE_HOME:-}"`,
			`case "$c" in /*) ;; *) c="$HOME/.cache";; esac`,
			`d="$c/toworker"`,
		}
	}
	keep := s.opts.KeepVersions
	if keep == 0 {
		keep = defaultKeepVersions
	}
	prune := `r() { :; }`
	if keep > 0 {
		// Newest first by the mtime of the agent or of its stamp (written
		// at each use), whichever comes first; each hash counted once.
		prune = `r() { ls -t "$1" 2>/dev/null | { i=0; S=" "; while read -r f; do case ${#f} in 64) y=$f;; 67) y=${f%.ok}; [ "$y.ok" = "$f" ] || continue;; *) continue;; esac; case "$S" in *" $y "*) continue;; esac; S="$S$y "; i=$((i+1)); [ $i -le ` +
			strconv.Itoa(keep) + ` ] || [ "$y" = "$h" ] || rm -f "$1/$y" "$1/$y.ok"; done; }; }`
	}
	parts = append(parts,
		// st: the file's identity and change time. A stamp d/h.ok holding
		// it is written when the file's SHA-256 has been checked; while
		// the file keeps that identity and ctime (which every write,
		// rename or chmod updates, and no user can set back), it is the
		// same verified file and is not hashed again.
		// Each substitution is one command, which the subshell execs
		// without forking again (with || in it, it would fork twice).
		`st() { s=$(stat -c "%i:%s:%Y:%Z" "$1" 2>/dev/null) || s=$(stat -f "%i:%z:%m:%c" "$1" 2>/dev/null); }`,
		`g() { if [ -L "$1" ] || [ -L "$2" ] || [ -L "$1.ok" ]; then return 1; fi; [ -f "$1" ] && [ -O "$1" ] && [ -O "$2" ] && [ -x "$1" ] || return 1; st "$1"; if [ -n "$s" ] && [ -f "$1.ok" ] && read -r o < "$1.ok" && [ "$o" = "$s" ]; then return 0; fi; k "$1" "$h"; }`,
		`e() { [ -n "$s" ] || st "$1"; [ -L "$1.ok" ] || [ -z "$s" ] || echo "$s" 1<>"$1.ok"; `+oneProc+`; exec "$1" --toworker-agent boss; }`,
		prune,
	)
	parts = append(parts, cache...)
	parts = append(parts,
		`[ -L "$d" ] && x "the agent cache directory $d is a symlink: refusing to use it (remove it, or set AgentOptions.CacheDir)"`,
		`[ -e "$d" ] && { [ -d "$d" ] && [ -O "$d" ] || x "the agent cache directory $d is not a directory owned by this user: refusing to use it"; }`,
	)
	parts = append(parts, detect...)
	parts = append(parts,
		`g "$d/$h" "$d" && e "$d/$h"`,
		`u=$(id -u)`,
		`f="${TMPDIR:-/tmp}"`,
		`case "$f" in /*) ;; *) f=/tmp;; esac`,
		`f="$f/toworker-$u"`,
		`g "$f/$h" "$f" && { echo "toworker-note the agent cache directory $d does not allow running programs (noexec?): using $f"; e "$f/$h"; }`,
		// Everything that can fail before the upload fails before asking
		// for it: the master reads the reason instead of writing on.
		`mkdir -p "$d" 2>/dev/null`,
		`[ -L "$d" ] && x "the agent cache directory $d is a symlink: refusing to use it"`,
		`[ -d "$d" ] || x "cannot create the agent cache directory $d (read-only file system or home?): set AgentOptions.CacheDir to a writable directory"`,
		`[ -O "$d" ] || x "the agent cache directory $d belongs to another user: refusing to use it"`,
		`chmod 700 "$d" 2>/dev/null`,
		`t="$d/.tmp.`+newTmpToken()+`"`,
		`q() { rm -f "$t"; }`,
		`trap "q; exit 109" HUP INT TERM`,
		`rm -f "$t"`,
		`set -C`,
		`m=$( : 2>&1 >"$t" ) || x "cannot write in the agent cache directory $d: $(echo $m); set AgentOptions.CacheDir to a writable directory"`,
		`set +C`,
		`[ -n "$p" ] || `+platformLine(s.opts.kernelInfo),
		// The cache's token (see sharedUploads): the first host to need
		// an upload into d writes one; hosts sharing d read the same.
		`i=`,
		`[ -L "$d/.id" ] || { [ -e "$d/.id" ] || { set -C; echo `+newCacheToken()+` >"$d/.id"; set +C; }; read -r i <"$d/.id"; } 2>/dev/null`,
		// Asked for at once: the master's first frames, which come before
		// the upload on stdin, are discarded after (y), so that the
		// question does not wait for them (on OpenSSH, a round trip after
		// the exec, when sshd opens the session's window).
		`echo "toworker-need $p $i"`,
		`y || { q; exit 101; }`,
		`read -r z h || { q; exit 102; }`,
		// Another host sharing d has just received the agent: look again.
		// Not there after all (the token was copied with the directory,
		// or that upload failed): a token of its own, and ask as anyone.
		`if [ "$z" = again ]; then g "$d/$h" "$d" && { q; e "$d/$h"; }; echo `+newCacheToken()+` >|"$d/.id" 2>/dev/null; echo "toworker-need $p"; y || { q; exit 101; }; read -r z h || { q; exit 102; }; fi`,
		`[ "$z" = none ] && { q; exit 103; }`,
		// A write that fails (full file system) drains the rest of the
		// upload, so that the master gets to read why.
		`m=$( { head -c "$z" | { gzip -dc >>"$t" || { cat >/dev/null; false; }; }; } 2>&1 ) || { q; x "could not write the agent to $d: $(echo $m)"; }`,
		`chmod 700 "$t"`,
		`k "$t" "$h" || { q; x "the uploaded agent has SHA-256 $v, not $h: corrupted on the way?"; }`,
		`a="$d/$h"`,
		`if [ -x "$t" ]; then mv -f "$t" "$a" || { q; x "could not rename the agent into $d"; }; else `+
			`mkdir "$f" 2>/dev/null; `+
			`if [ -L "$f" ]; then q; x "the fallback agent directory $f is a symlink: refusing to use it"; fi; `+
			`[ -d "$f" ] && [ -O "$f" ] || { q; x "the agent cache directory $d does not allow running programs (noexec?), and the fallback $f is not a directory owned by this user"; }; `+
			`chmod 700 "$f"; a="$f/$h"; rm -f "$a"; `+
			`mv -f "$t" "$a" || { q; rm -f "$a"; x "the agent cache directory $d does not allow running programs (noexec?), and the agent could not be moved to $f"; }; `+
			`[ -x "$a" ] || { rm -f "$a"; x "neither the agent cache directory $d nor the fallback $f allows running programs (noexec?): set AgentOptions.CacheDir to a directory where programs may run"; }; `+
			`k "$a" "$h" || { rm -f "$a"; x "the agent could not be copied to $f (full?)"; }; `+
			`echo "toworker-note the agent cache directory $d does not allow running programs (noexec?): using $f"; d=$f; fi`,
		`s=`,
		`r "$d"`,
		`e "$a"`,
	)
	return strings.Join(parts, "; "), nil
}

// platformLine is the script's step that sets p to what `uname -sm` prints
// for the host ("Linux x86_64"). Linux publishes the same two words as
// kernel.ostype and kernel.arch (the latter in kernels of recent years), which the
// shell's own read takes from dir (empty: /proc/sys/kernel) without the
// fork and exec of uname, about a millisecond of the host's CPU on every
// cold start; elsewhere, or if either file is missing, uname runs. The two
// differ only under a 32-bit personality (linux32), where uname names the
// 32-bit machine and arch the kernel's: the 64-bit agent runs there too.
func platformLine(dir string) string {
	if dir == "" {
		dir = "/proc/sys/kernel"
	}
	return `{ read -r p <"` + dir + `/ostype" && read -r a <"` + dir + `/arch" && p="$p $a"; } 2>/dev/null || p=$(uname -sm)`
}

// command is the exec request sent to sshd for a connection to t (nil when
// unknown): the script for /bin/sh, through sudo or doas with Become.
func (s *agentSet) command(t *sshdial.Target) (string, error) {
	sc, err := s.script(t)
	if err != nil {
		return "", err
	}
	if s.opts.Become != "" {
		return becomeCommand(s.opts.Become, sc), nil
	}
	return "exec /bin/sh -c '" + sc + "'", nil
}

// note passes on a "toworker-note" line of the bootstrap of host to w (nil:
// os.Stderr).
func (s *agentSet) note(host string, w io.Writer, line string) {
	if w == nil {
		w = os.Stderr
	}
	fmt.Fprintf(w, "toworker: %s: %s\n", host, printable(strings.TrimPrefix(line, notePrefix)))
}
