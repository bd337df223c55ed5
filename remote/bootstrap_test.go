package remote_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/toworker/toworker/agent"
	"github.com/toworker/toworker/internal/sshdtest"
	"github.com/toworker/toworker/internal/wire"
	"github.com/toworker/toworker/remote"
)

// The bootstrap tests start their own sshd servers (with odd users,
// environments and file systems) in labs of their own, so that the shared
// lab's hosts and caches stay as the other tests expect them.

// Who is what the bootstrap tests learn from the agent that ran a job.
type Who struct {
	UID  int
	Exe  string // the agent binary the worker runs from
	Home string
	Arg0 string // the worker's argv[0]
	Comm string // the worker's name, as top and pgrep see it
}

var Whoami = agent.Register("test.bootstrap.whoami", func(ctx context.Context, _ struct{}) (Who, error) {
	exe, _ := os.Executable()
	comm, _ := os.ReadFile("/proc/self/comm")
	return Who{UID: os.Getuid(), Exe: exe, Home: os.Getenv("HOME"), Arg0: os.Args[0], Comm: strings.TrimSpace(string(comm))}, nil
})

// bootLab is a lab of the bootstrap tests' own.
type bootLab struct {
	*sshdtest.Lab
	closing sync.WaitGroup // pools closing in the background
}

// newBootLab starts a lab with no server yet; add them with AddServer.
func newBootLab(t *testing.T) *bootLab {
	l := &bootLab{Lab: sshdtest.NewLab(t, sshdtest.LabOptions{Hosts: -1})}
	t.Cleanup(l.closing.Wait) // before the lab closes
	return l
}

// boot is the outcome of one connection and one job.
type boot struct {
	who     Who
	err     error
	uploads int
	envs    int    // Stats().Total.EnvStarts
	warn    string // what the pool warned about (toworker-note lines)
	out     string // what the pool printed (job output)
	took    time.Duration
}

// bootOnce connects a fresh pool to host of l with the agent options ao,
// runs Whoami there without retries, and closes the pool.
func bootOnce(t *testing.T, l *bootLab, host string, ao remote.AgentOptions) boot {
	t.Helper()
	var warn, out lockedBuf
	cfg := remote.PoolConfig{Hosts: []string{host}, MinWarm: -1, Timeout: 30 * time.Second, ConnectTimeout: 30 * time.Second,
		Agent: ao, SSH: remote.SSHOptions{ConfigFile: l.ConfigFile, Warn: &warn}, Stdout: &out, Stderr: &out}
	p, err := remote.NewPool(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res, err := p.Submit(context.Background(), remote.Job{Host: host, Func: Whoami.Name(), NoRetry: true}).Wait()
	b := boot{err: err, took: time.Since(start)}
	if err == nil {
		if derr := res.Decode(&b.who); derr != nil {
			t.Error(derr)
		}
	}
	st := p.Stats().Total
	b.uploads, b.envs = st.Uploads, st.EnvStarts
	b.warn, b.out = warn.String(), out.String()
	// Closing waits for the agent to stop its worker (about a second):
	// let that overlap with the rest of the test.
	l.closing.Add(1)
	go func() { defer l.closing.Done(); p.Close() }()
	return b
}

// mustBoot is bootOnce that fails the test on an error.
func mustBoot(t *testing.T, l *bootLab, host string, ao remote.AgentOptions) boot {
	t.Helper()
	b := bootOnce(t, l, host, ao)
	if b.err != nil {
		t.Fatalf("job on %s: %v", host, b.err)
	}
	// Workers start from the boss's own binary (/proc/self/exe), and look
	// as if started from its file.
	name := filepath.Base(b.who.Exe)
	if b.who.Arg0 != b.who.Exe || b.who.Comm != name[:min(len(name), 15)] {
		t.Errorf("the worker runs %s as argv[0] %q, named %q", b.who.Exe, b.who.Arg0, b.who.Comm)
	}
	return b
}

// mustFail is bootOnce that expects a bootstrap failure saying each of says,
// within 15 s.
func mustFail(t *testing.T, l *bootLab, host string, ao remote.AgentOptions, says ...string) boot {
	t.Helper()
	b := bootOnce(t, l, host, ao)
	if b.err == nil {
		t.Fatalf("job on %s ran (as uid %d from %s); want a failure saying %q", host, b.who.UID, b.who.Exe, says)
	}
	t.Logf("failed as expected in %v: %v", b.took.Round(time.Millisecond), b.err)
	if !remote.IsFailure(b.err) {
		t.Errorf("err = %v (%T), want a *FailureError", b.err, b.err)
	}
	for _, s := range says {
		if !strings.Contains(b.err.Error(), s) {
			t.Errorf("err = %v\nwant it to say %q", b.err, s)
		}
	}
	if b.took > 15*time.Second {
		t.Errorf("the failure took %v", b.took)
	}
	return b
}

func needRoot(t *testing.T, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("needs root: %s", why)
	}
}

// uidOf returns the uid of a local user.
func uidOf(t *testing.T, name string) int {
	t.Helper()
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(u.Uid)
	return n
}

func ownerOf(t *testing.T, path string) int {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return int(fi.Sys().(*syscall.Stat_t).Uid)
}

// hashFiles lists the agent files (named by a SHA-256) in dir.
func hashFiles(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if len(e.Name()) == 64 {
			out = append(out, e.Name())
		}
	}
	return out
}

// passwdShell returns name's login shell from the password database.
func passwdShell(t *testing.T, name string) string {
	t.Helper()
	out, err := exec.Command("getent", "passwd", name).Output()
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Split(strings.TrimSpace(string(out)), ":")
	return f[len(f)-1]
}

func TestLoginShells(t *testing.T) {
	needRoot(t, "creates throwaway users with other login shells and logs in as them")
	l := newBootLab(t)
	for _, sh := range []string{"bash", "dash", "zsh", "tcsh", "fish"} {
		t.Run(sh, func(t *testing.T) {
			path, err := exec.LookPath(sh)
			if err != nil {
				t.Fatalf("%s is not installed: run `make setup`", sh)
			}
			name := "twsh-" + sh
			if err := sshdtest.EnsureUser(name, path); err != nil {
				t.Fatal(err)
			}
			srv, err := l.AddServer(sshdtest.Options{Name: "sh-" + sh, User: name, LoginShell: path})
			if err != nil {
				t.Fatal(err)
			}
			if got := passwdShell(t, name); got != path {
				t.Fatalf("%s's login shell is %s, want %s", name, got, path)
			}
			uid := uidOf(t, name)
			// sshd gives the session XDG_CACHE_HOME=srv.CacheDir: it must be
			// the user's, or the bootstrap rightly refuses it.
			fi, err := os.Stat(srv.CacheDir)
			if err != nil || ownerOf(t, srv.CacheDir) != uid || fi.Mode().Perm()&0o700 != 0o700 {
				t.Fatalf("cache dir %s is not writable by %s (uid %d): %v %v", srv.CacheDir, name, uid, fi.Mode(), err)
			}
			b := mustBoot(t, l, srv.Name, remote.AgentOptions{})
			if b.who.UID != uid || b.uploads != 1 {
				t.Fatalf("first job: uid %d uploads %d, want uid %d and one upload", b.who.UID, b.uploads, uid)
			}
			cache := filepath.Join(srv.CacheDir, "toworker")
			if !strings.HasPrefix(b.who.Exe, cache+"/") || ownerOf(t, b.who.Exe) != uid {
				t.Errorf("agent runs from %s, want a file of %s's in %s", b.who.Exe, name, cache)
			}
			if b := mustBoot(t, l, srv.Name, remote.AgentOptions{}); b.uploads != 0 {
				t.Errorf("second job uploaded %d times: the cached agent was not found through %s", b.uploads, sh)
			}
		})
	}
}

// fakeUname writes an executable "uname" into a new directory that logs
// each call to the returned log file and prints what (or, when what is
// empty, what the real uname prints).
func fakeUname(t *testing.T, what string) (dir, log string) {
	t.Helper()
	dir = t.TempDir()
	log = filepath.Join(dir, "calls")
	body := "#!/bin/sh\necho \"$*\" >>" + log + "\n"
	if what == "" {
		body += "exec /usr/bin/uname \"$@\"\n"
	} else {
		body += "echo '" + what + "'\n"
	}
	if err := os.WriteFile(filepath.Join(dir, "uname"), []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, log
}

func countLines(path string) int {
	b, _ := os.ReadFile(path)
	return strings.Count(string(b), "\n")
}

func TestPlatformEndToEnd(t *testing.T) {
	l := newBootLab(t)
	plan9, _ := fakeUname(t, "Plan9 mips")
	counted, calls := fakeUname(t, "")
	procCounted, procCalls := fakeUname(t, "")
	for _, s := range []sshdtest.Options{
		{Name: "plan9", ExtraConfig: []string{"SetEnv PATH=" + plan9 + ":/usr/bin:/bin"}},
		{Name: "counted", ExtraConfig: []string{"SetEnv PATH=" + counted + ":/usr/bin:/bin"}},
		{Name: "proc", ExtraConfig: []string{"SetEnv PATH=" + procCounted + ":/usr/bin:/bin"}},
	} {
		if _, err := l.AddServer(s); err != nil {
			t.Fatal(err)
		}
	}
	// Without kernel files to read (hosts that are not Linux), the
	// bootstrap asks uname.
	noKernelInfo := remote.WithKernelInfo(remote.AgentOptions{}, filepath.Join(t.TempDir(), "absent"))
	here := runtime.GOOS + "/" + runtime.GOARCH // the master's own platform, the only one it has
	t.Run("unknown", func(t *testing.T) {
		b := mustFail(t, l, "plan9", noKernelInfo, `no agent binary for platform "Plan9 mips"; available: `+here, "make agents")
		if b.uploads != 0 {
			t.Errorf("uploaded %d times to a host of an unknown platform", b.uploads)
		}
	})
	t.Run("unknown from kernel files", func(t *testing.T) {
		dir := t.TempDir()
		for name, v := range map[string]string{"ostype": "Plan9\n", "arch": "amd64\n"} {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(v), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		// The host's uname would say "Plan9 mips": the files come first.
		b := mustFail(t, l, "plan9", remote.WithKernelInfo(remote.AgentOptions{}, dir), `no agent binary for platform "Plan9 amd64"; available: `+here)
		if b.uploads != 0 {
			t.Errorf("uploaded %d times to a host of an unknown platform", b.uploads)
		}
	})
	t.Run("remembered", func(t *testing.T) {
		first := mustBoot(t, l, "counted", noKernelInfo)
		n := countLines(calls)
		if first.uploads != 1 || n != 1 {
			t.Fatalf("first connection: %d uploads, %d uname calls; want 1 and 1 (detection in the bootstrap)", first.uploads, n)
		}
		// Same process, new pool: the platform is remembered, the cached
		// agent found without asking uname.
		if b := mustBoot(t, l, "counted", noKernelInfo); b.uploads != 0 {
			t.Fatalf("second connection uploaded %d times", b.uploads)
		}
		if n := countLines(calls); n != 1 {
			t.Errorf("uname ran %d times in all, want once: the platform was not remembered", n)
		}
		// A host whose cache was wiped: detected again, and served.
		srv := l.Server("counted")
		os.RemoveAll(filepath.Join(srv.CacheDir, "toworker"))
		if b := mustBoot(t, l, "counted", noKernelInfo); b.uploads != 1 {
			t.Fatalf("after wiping the cache: %d uploads, want 1", b.uploads)
		}
		if n := countLines(calls); n != 2 {
			t.Errorf("uname ran %d times in all, want twice (once more before the upload)", n)
		}
	})
	t.Run("read from /proc", func(t *testing.T) {
		// Where this kernel publishes kernel.arch, the bootstrap reads
		// the platform instead of running uname, on the first-ever start
		// as before an upload; elsewhere it runs uname each time.
		want := 0
		if _, err := os.Stat("/proc/sys/kernel/arch"); err != nil {
			want = 1
		}
		srv := l.Server("proc")
		for i := 1; i <= 2; i++ {
			if b := mustBoot(t, l, "proc", remote.AgentOptions{}); b.uploads != 1 {
				t.Fatalf("start %d with the cache wiped: %d uploads, want 1", i, b.uploads)
			}
			if n := countLines(procCalls); n != i*want {
				t.Errorf("after start %d, uname ran %d times; want %d", i, n, i*want)
			}
			os.RemoveAll(filepath.Join(srv.CacheDir, "toworker"))
		}
	})
}

func TestPreinstalledAgent(t *testing.T) {
	l := newBootLab(t)
	srv, err := l.AddServer(sshdtest.Options{Name: "pre"})
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "opt dir") // a space: quoted all the way
	os.Mkdir(dir, 0o755)
	good := filepath.Join(dir, "toworker-agent")
	if err := os.WriteFile(good, raw, 0o755); err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(srv.CacheDir, "toworker")

	t.Run("located", func(t *testing.T) {
		b := mustBoot(t, l, "pre", remote.AgentOptions{Path: good})
		if b.who.Exe != good || b.uploads != 0 {
			t.Errorf("agent ran from %s after %d uploads, want %s and none", b.who.Exe, b.uploads, good)
		}
		if _, err := os.Stat(cache); err == nil {
			t.Errorf("the cache %s was created although the agent is pre-installed", cache)
		}
	})
	t.Run("mismatch", func(t *testing.T) {
		mark := filepath.Join(t.TempDir(), "wrong-agent-ran")
		wrong := filepath.Join(dir, "old-agent")
		os.WriteFile(wrong, []byte("#!/bin/sh\ntouch "+mark+"\n"), 0o755)
		mustFail(t, l, "pre", remote.AgentOptions{Path: wrong}, "the pre-installed agent "+wrong+" has SHA-256 ", "not running it")
		if _, err := os.Stat(mark); err == nil {
			t.Error("the mismatching agent was executed")
		}
	})
	t.Run("missing", func(t *testing.T) {
		mustFail(t, l, "pre", remote.AgentOptions{Path: filepath.Join(dir, "nothing-here")}, "no agent at "+dir+"/nothing-here")
	})
	t.Run("group-writable", func(t *testing.T) {
		loose := filepath.Join(dir, "loose-agent")
		os.WriteFile(loose, raw, 0o775)
		os.Chmod(loose, 0o775)
		mustFail(t, l, "pre", remote.AgentOptions{Path: loose}, "writable by its group or by others")
	})
	t.Run("other-owner", func(t *testing.T) {
		needRoot(t, "chowns a file to nobody")
		theirs := filepath.Join(dir, "their-agent")
		os.WriteFile(theirs, raw, 0o755)
		if err := os.Chown(theirs, uidOf(t, "nobody"), -1); err != nil {
			t.Fatal(err)
		}
		mustFail(t, l, "pre", remote.AgentOptions{Path: theirs}, "neither root nor this user")
	})
}

// sudoers installs a sudoers.d file for the test, removed at cleanup.
func sudoers(t *testing.T, rules string) {
	t.Helper()
	var r [6]byte
	rand.Read(r[:])
	path := "/etc/sudoers.d/toworker-test-" + hex.EncodeToString(r[:])
	if err := os.WriteFile(path, []byte(rules), 0o440); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(path) })
	if out, err := exec.Command("visudo", "-c", "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("sudoers rules %q: %v: %s", rules, err, out)
	}
}

func TestBecome(t *testing.T) {
	needRoot(t, "creates throwaway users and sudoers rules")
	if _, err := exec.LookPath("sudo"); err != nil {
		t.Fatal("sudo is not installed: run `make setup`")
	}
	for _, u := range []string{"twlogin", "twnopass", "twbecome"} {
		if err := sshdtest.EnsureUser(u, "/bin/sh"); err != nil {
			t.Fatal(err)
		}
	}
	sudoers(t, "twlogin ALL=(twbecome) NOPASSWD: /bin/sh\ntwnopass ALL=(twbecome) /bin/sh\n")
	l := newBootLab(t)
	fakeDoas := t.TempDir()
	os.WriteFile(filepath.Join(fakeDoas, "doas"), []byte("#!/bin/sh\n"+
		"echo \"$1 $2 $3 $4 $5\" >"+fakeDoas+"/args\n"+
		"PATH=/usr/bin:/bin exec \"$4\" \"$5\" \"$6\"\n"), 0o755)
	// A real doas (Debian's opendoas), found where sudo is not: a PATH
	// holding only it.
	realDoas := openTempDir(t)
	if err := os.Symlink("/usr/bin/doas", filepath.Join(realDoas, "doas")); err != nil {
		t.Fatal(err)
	}
	doasConf(t, "permit nopass twlogin as twbecome cmd /bin/sh\npermit twnopass as twbecome cmd /bin/sh\n")
	for _, s := range []sshdtest.Options{
		{Name: "login", User: "twlogin"},
		{Name: "nopass", User: "twnopass"},
		{Name: "nosudo", ExtraConfig: []string{"SetEnv PATH=/nonexistent"}},
		{Name: "doas", ExtraConfig: []string{"SetEnv PATH=" + fakeDoas}},
		{Name: "realdoas", User: "twlogin", ExtraConfig: []string{"SetEnv PATH=" + realDoas}},
		{Name: "realdoas-nopass", User: "twnopass", ExtraConfig: []string{"SetEnv PATH=" + realDoas}},
	} {
		if _, err := l.AddServer(s); err != nil {
			t.Fatal(err)
		}
	}
	target := uidOf(t, "twbecome")
	home, err := user.Lookup("twbecome")
	if err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(home.HomeDir, ".cache", "toworker")

	t.Run("nopasswd", func(t *testing.T) {
		os.RemoveAll(cache)
		b := mustBoot(t, l, "login", remote.AgentOptions{Become: "twbecome"})
		if b.who.UID != target {
			t.Fatalf("the job ran as uid %d, want twbecome's %d", b.who.UID, target)
		}
		// The cache is twbecome's own, and so is the file it ran.
		if !strings.HasPrefix(b.who.Exe, cache+"/") || ownerOf(t, b.who.Exe) != target || ownerOf(t, cache) != target {
			t.Errorf("agent ran from %s; want a file owned by twbecome in %s", b.who.Exe, cache)
		}
		if b.who.Home != home.HomeDir {
			t.Errorf("the job's HOME is %q, want twbecome's %q", b.who.Home, home.HomeDir)
		}
		if b.uploads != 1 {
			t.Errorf("%d uploads, want 1", b.uploads)
		}
		if b := mustBoot(t, l, "login", remote.AgentOptions{Become: "twbecome"}); b.uploads != 0 || b.who.UID != target {
			t.Errorf("second connection: %d uploads as uid %d, want the cached agent as %d", b.uploads, b.who.UID, target)
		}
	})
	t.Run("password", func(t *testing.T) {
		b := mustFail(t, l, "nopass", remote.AgentOptions{Become: "twbecome"},
			"sudo requires a password for twbecome on nopass", "NOPASSWD")
		if !errors.Is(b.err, remote.ErrBecome) {
			t.Errorf("err = %v, want it to wrap ErrBecome", b.err)
		}
		if b.took > 5*time.Second {
			t.Errorf("took %v to fail: sudo must not wait for a password", b.took)
		}
	})
	t.Run("neither", func(t *testing.T) {
		b := mustFail(t, l, "nosudo", remote.AgentOptions{Become: "twbecome"}, "neither sudo nor doas is installed on nosudo")
		if !errors.Is(b.err, remote.ErrBecome) {
			t.Errorf("err = %v, want it to wrap ErrBecome", b.err)
		}
	})
	t.Run("doas", func(t *testing.T) {
		// Where sudo is missing doas is used, the same way. (The fake
		// doas only records its arguments and runs the command as is.)
		mustBoot(t, l, "doas", remote.AgentOptions{Become: "twbecome", CacheDir: t.TempDir()})
		args, _ := os.ReadFile(filepath.Join(fakeDoas, "args"))
		if got := strings.TrimSpace(string(args)); got != "-n -u twbecome /bin/sh -c" {
			t.Errorf("doas got %q, want \"-n -u twbecome /bin/sh -c\" and the script", got)
		}
	})
	t.Run("real doas", func(t *testing.T) {
		b := mustBoot(t, l, "realdoas", remote.AgentOptions{Become: "twbecome", CacheDir: becomeCache(t, target)})
		if b.who.UID != target {
			t.Fatalf("through doas the job ran as uid %d, want twbecome's %d", b.who.UID, target)
		}
		b = mustFail(t, l, "realdoas-nopass", remote.AgentOptions{Become: "twbecome", CacheDir: becomeCache(t, target)},
			"doas requires a password for twbecome on realdoas-nopass", "permit nopass")
		if !errors.Is(b.err, remote.ErrBecome) || b.took > 5*time.Second {
			t.Errorf("err = %v after %v, want ErrBecome at once", b.err, b.took)
		}
	})
}

// becomeCache is a fresh agent cache directory owned by uid.
func becomeCache(t *testing.T, uid int) string {
	t.Helper()
	dir := filepath.Join(openTempDir(t), "cache")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, uid, -1); err != nil {
		t.Fatal(err)
	}
	return dir
}

// openTempDir is a temporary directory other users can traverse (t.TempDir
// is private to root).
func openTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "toworker-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// doasConf installs rules as /etc/doas.conf for the test, putting back
// whatever was there at cleanup.
func doasConf(t *testing.T, rules string) {
	t.Helper()
	if _, err := exec.LookPath("doas"); err != nil {
		t.Fatal("doas is not installed: run `make setup` (apt-get install opendoas)")
	}
	const path = "/etc/doas.conf"
	old, err := os.ReadFile(path)
	had := err == nil
	if err := os.WriteFile(path, []byte(rules), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if had {
			os.WriteFile(path, old, 0o600)
		} else {
			os.Remove(path)
		}
	})
}

// makeHashFile creates a fake agent file named by a random 64-hex name in
// dir with the given age.
func makeHashFile(t *testing.T, dir string, age time.Duration) string {
	t.Helper()
	var r [32]byte
	rand.Read(r[:])
	name := hex.EncodeToString(r[:])
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("old agent"), 0o700); err != nil {
		t.Fatal(err)
	}
	when := time.Now().Add(-age)
	os.Chtimes(p, when, when)
	return name
}

// Connections that start at once from one cache directory, as on hosts that
// share a home directory over NFS, find the agent verified: none hashes it
// again because another was rewriting the stamp at that moment.
func TestSharedCacheConcurrentStarts(t *testing.T) {
	l := newBootLab(t)
	wrap := t.TempDir()
	calls := filepath.Join(wrap, "calls")
	script := "#!/bin/sh\necho \"$*\" >>" + calls + "\nexec /usr/bin/sha256sum \"$@\"\n"
	if err := os.WriteFile(filepath.Join(wrap, "sha256sum"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := l.AddServer(sshdtest.Options{Name: "shared", ExtraConfig: []string{"SetEnv PATH=" + wrap + ":/usr/bin:/bin"}}); err != nil {
		t.Fatal(err)
	}
	ao := remote.AgentOptions{CacheDir: filepath.Join(t.TempDir(), "cache")}
	if b := mustBoot(t, l, "shared", ao); b.uploads != 1 {
		t.Fatalf("%d uploads, want 1", b.uploads)
	}
	before := countLines(calls)
	if before == 0 {
		t.Fatal("the upload was not hashed through the logging sha256sum: the test cannot see hashing")
	}
	// Meanwhile, read the stamp as another connection would.
	stamp := filepath.Join(ao.CacheDir, filepath.Base(mustBoot(t, l, "shared", ao).who.Exe)+".ok")
	stop := make(chan struct{})
	var reads, partial int
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			b, err := os.ReadFile(stamp)
			reads++
			if err != nil || !bytes.HasSuffix(b, []byte("\n")) {
				partial++
			}
			time.Sleep(20 * time.Microsecond)
		}
	}()
	const rounds, conns = 3, 16
	for range rounds {
		var wg sync.WaitGroup
		errs := make(chan error, conns)
		for range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p, err := remote.NewPool(context.Background(), remote.PoolConfig{Hosts: []string{"shared"}, MinWarm: -1,
					Agent: ao, SSH: remote.SSHOptions{ConfigFile: l.ConfigFile}, Stdout: io.Discard, Stderr: io.Discard})
				if err != nil {
					errs <- err
					return
				}
				defer p.Close()
				if _, err := p.Submit(context.Background(), remote.Job{Host: "shared", Func: Whoami.Name(), NoRetry: true}).Wait(); err != nil {
					errs <- err
				} else if n := p.Stats().Total.Uploads; n != 0 {
					errs <- fmt.Errorf("%d uploads, want the cached agent", n)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	}
	close(stop)
	<-readerDone
	if partial != 0 {
		t.Errorf("%d of %d reads of the stamp found it missing or cut short while connections rewrote it", partial, reads)
	}
	if n := countLines(calls) - before; n != 0 {
		t.Errorf("%d of %d connections hashed the cached agent again: they read the stamp while another connection rewrote it", n, rounds*conns)
	}
}

// Where stat is BSD's (stat -f FORMAT; -c is an illegal option), the stamp
// works the same: the cached agent is hashed when it arrives, and not again.
func TestStampWithBSDStat(t *testing.T) {
	l := newBootLab(t)
	dir := t.TempDir()
	log := filepath.Join(dir, "calls")
	for name, body := range map[string]string{
		"stat": `case "$1" in
-c) echo "stat: illegal option -- c" >&2; exit 1;;
-f) [ "$2" = "%i:%z:%m:%c" ] || exit 2; echo "stat -f" >>` + log + `; exec /usr/bin/stat -c "%i:%s:%Y:%Z" "$3";;
esac
exit 2`,
		"sha256sum": `echo sha256sum >>` + log + `; exec /usr/bin/sha256sum "$@"`,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.AddServer(sshdtest.Options{Name: "bsdstat", ExtraConfig: []string{"SetEnv PATH=" + dir + ":/usr/bin:/bin"}}); err != nil {
		t.Fatal(err)
	}
	calls := func() (stats, hashes int) {
		b, _ := os.ReadFile(log)
		return strings.Count(string(b), "stat -f"), strings.Count(string(b), "sha256sum")
	}
	ao := remote.AgentOptions{CacheDir: filepath.Join(t.TempDir(), "cache")}
	if b := mustBoot(t, l, "bsdstat", ao); b.uploads != 1 {
		t.Fatalf("%d uploads, want 1", b.uploads)
	}
	stats0, hashes0 := calls()
	if hashes0 == 0 {
		t.Fatal("the upload was not hashed through the logging sha256sum: the test cannot see hashing")
	}
	for range 2 {
		if b := mustBoot(t, l, "bsdstat", ao); b.uploads != 0 {
			t.Fatalf("%d uploads, want the cached agent", b.uploads)
		}
	}
	stats, hashes := calls()
	if stats-stats0 != 2 || hashes != hashes0 {
		t.Errorf("two cached starts ran stat -f %d times and sha256sum %d times, want 2 and 0", stats-stats0, hashes-hashes0)
	}
}

// Hosts that share one agent cache (a home directory on NFS) and first meet
// this agent at once get it uploaded once: the others wait for that upload
// and find it. Hosts whose caches only carry the same token (a home copied
// from one image) look, find nothing, and each get an upload all the same.
func TestSharedCacheOneUpload(t *testing.T) {
	l := newBootLab(t)
	var hosts []string
	for i := range 4 {
		name := fmt.Sprintf("nfs%d", i)
		if _, err := l.AddServer(sshdtest.Options{Name: name}); err != nil {
			t.Fatal(err)
		}
		hosts = append(hosts, name)
	}
	runAll := func(t *testing.T, ao func(host string) remote.AgentOptions) (uploads int, exes []string) {
		t.Helper()
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, h := range hosts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p, err := remote.NewPool(context.Background(), remote.PoolConfig{Hosts: []string{h}, MinWarm: -1,
					Agent: ao(h), SSH: remote.SSHOptions{ConfigFile: l.ConfigFile}, Stdout: io.Discard, Stderr: io.Discard})
				if err != nil {
					t.Error(err)
					return
				}
				defer p.Close()
				res, err := p.Submit(context.Background(), remote.Job{Host: h, Func: Whoami.Name(), NoRetry: true}).Wait()
				var who Who
				if err == nil {
					err = res.Decode(&who)
				}
				if err != nil {
					t.Errorf("%s: %v", h, err)
					return
				}
				mu.Lock()
				uploads += p.Stats().Total.Uploads
				exes = append(exes, who.Exe)
				mu.Unlock()
			}()
		}
		wg.Wait()
		return uploads, exes
	}

	t.Run("shared", func(t *testing.T) {
		shared := filepath.Join(t.TempDir(), "cache")
		uploads, exes := runAll(t, func(string) remote.AgentOptions { return remote.AgentOptions{CacheDir: shared} })
		if uploads != 1 {
			t.Errorf("%d uploads into one cache shared by %d hosts, want 1", uploads, len(hosts))
		}
		for _, exe := range exes {
			if filepath.Dir(exe) != shared {
				t.Errorf("an agent runs from %s, not from the shared cache", exe)
			}
		}
	})

	t.Run("copied token", func(t *testing.T) {
		base := t.TempDir()
		dir := func(h string) string { return filepath.Join(base, h) }
		for _, h := range hosts {
			if err := os.Mkdir(dir(h), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir(h), ".id"), []byte("0123456789abcdef01234567\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		uploads, exes := runAll(t, func(h string) remote.AgentOptions { return remote.AgentOptions{CacheDir: dir(h)} })
		if uploads != len(hosts) || len(exes) != len(hosts) {
			t.Errorf("%d uploads and %d agents for %d separate caches, want one each", uploads, len(exes), len(hosts))
		}
	})
}

func TestCacheKeepVersions(t *testing.T) {
	l := newBootLab(t)
	if _, err := l.AddServer(sshdtest.Options{Name: "keep"}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		keep, want int // want: agent files left, ours included
	}{{0, 3}, {2, 2}, {1, 1}, {-1, 6}} {
		t.Run(strconv.Itoa(tt.keep), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "cache")
			os.Mkdir(dir, 0o700)
			var old []string // newest first
			for i := 1; i <= 5; i++ {
				old = append(old, makeHashFile(t, dir, time.Duration(i)*time.Hour))
			}
			os.WriteFile(filepath.Join(dir, "README"), []byte("not an agent"), 0o600)
			b := mustBoot(t, l, "keep", remote.AgentOptions{CacheDir: dir, KeepVersions: tt.keep})
			if b.uploads != 1 {
				t.Fatalf("%d uploads, want 1", b.uploads)
			}
			ours := filepath.Base(b.who.Exe)
			left := hashFiles(t, dir)
			want := append([]string{ours}, old[:tt.want-1]...)
			if strings.Join(sorted(left), ",") != strings.Join(sorted(want), ",") {
				t.Errorf("cache keeps %d files %v, want ours and the %d most recently used: %v", len(left), left, tt.want-1, want)
			}
			if _, err := os.Stat(filepath.Join(dir, "README")); err != nil {
				t.Errorf("a file that is not an agent was removed: %v", err)
			}
		})
	}
	t.Run("touch", func(t *testing.T) {
		// A cached agent in use counts as recent, however old its file.
		dir := filepath.Join(t.TempDir(), "cache")
		os.Mkdir(dir, 0o700)
		b := mustBoot(t, l, "keep", remote.AgentOptions{CacheDir: dir, KeepVersions: 2})
		long := time.Now().Add(-1000 * time.Hour)
		os.Chtimes(b.who.Exe, long, long)
		if b := mustBoot(t, l, "keep", remote.AgentOptions{CacheDir: dir, KeepVersions: 2}); b.uploads != 0 {
			t.Fatalf("%d uploads, want the cached agent", b.uploads)
		}
		fi, err := os.Stat(b.who.Exe + ".ok")
		if err != nil || time.Since(fi.ModTime()) > time.Minute {
			t.Errorf("the use of the agent was not recorded in its stamp: mtime %v (%v)", fi.ModTime(), err)
		}
	})
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

// mount mounts a tmpfs with opts at a new directory, unmounted at cleanup;
// it skips the test when mounting is not possible here.
func mount(t *testing.T, opts string) string {
	t.Helper()
	needRoot(t, "mounts a tmpfs")
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", opts, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here (%v: %s)", err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

func TestHostileCache(t *testing.T) {
	l := newBootLab(t)
	tmp := t.TempDir() // the host's TMPDIR: where the noexec fallback goes
	if _, err := l.AddServer(sshdtest.Options{Name: "hostile", ExtraConfig: []string{"SetEnv TMPDIR=" + tmp}}); err != nil {
		t.Fatal(err)
	}
	fresh := func(t *testing.T) string {
		d := filepath.Join(t.TempDir(), "cache")
		os.Mkdir(d, 0o700)
		return d
	}

	t.Run("symlink-dir", func(t *testing.T) {
		real := fresh(t)
		link := filepath.Join(t.TempDir(), "link")
		os.Symlink(real, link)
		b := mustFail(t, l, "hostile", remote.AgentOptions{CacheDir: link}, "the agent cache directory "+link+" is a symlink: refusing to use it")
		if b.uploads != 0 || len(hashFiles(t, real)) != 0 {
			t.Errorf("an agent went through the symlink (%d uploads)", b.uploads)
		}
	})
	t.Run("dir-of-other-user", func(t *testing.T) {
		needRoot(t, "chowns a directory to nobody")
		d := fresh(t)
		os.Chown(d, uidOf(t, "nobody"), -1)
		mustFail(t, l, "hostile", remote.AgentOptions{CacheDir: d}, "is not a directory owned by this user")
	})
	t.Run("file-of-other-user", func(t *testing.T) {
		needRoot(t, "chowns a file to nobody")
		d := fresh(t)
		b := mustBoot(t, l, "hostile", remote.AgentOptions{CacheDir: d})
		// The genuine agent, but someone else's file: not run, replaced.
		if err := os.Chown(b.who.Exe, uidOf(t, "nobody"), -1); err != nil {
			t.Fatal(err)
		}
		b2 := mustBoot(t, l, "hostile", remote.AgentOptions{CacheDir: d})
		if b2.uploads != 1 || b2.who.Exe != b.who.Exe {
			t.Errorf("%d uploads, ran %s: want the file of nobody's replaced by a fresh upload", b2.uploads, b2.who.Exe)
		}
		if ownerOf(t, b.who.Exe) != os.Getuid() {
			t.Errorf("the agent file still belongs to uid %d", ownerOf(t, b.who.Exe))
		}
	})
	t.Run("symlink-at-temp-name", func(t *testing.T) {
		d := fresh(t)
		remote.SetTmpToken(t, "planted")
		victim := filepath.Join(t.TempDir(), "victim")
		os.WriteFile(victim, []byte("precious"), 0o600)
		dangling := filepath.Join(t.TempDir(), "created-through-link")
		for _, target := range []string{victim, dangling} {
			os.Remove(filepath.Join(d, ".tmp.planted"))
			if err := os.Symlink(target, filepath.Join(d, ".tmp.planted")); err != nil {
				t.Fatal(err)
			}
			for _, f := range hashFiles(t, d) {
				os.Remove(filepath.Join(d, f))
			}
			if b := mustBoot(t, l, "hostile", remote.AgentOptions{CacheDir: d}); b.uploads != 1 {
				t.Fatalf("%d uploads, want 1", b.uploads)
			}
			if got, _ := os.ReadFile(victim); string(got) != "precious" {
				t.Errorf("the file behind a symlink at the temporary name was written: %q", got)
			}
			if _, err := os.Lstat(dangling); err == nil {
				t.Errorf("a file was created through a dangling symlink at the temporary name")
			}
		}
	})
	t.Run("full", func(t *testing.T) {
		m := mount(t, "size=512k,mode=0700")
		d := filepath.Join(m, "cache")
		b := mustFail(t, l, "hostile", remote.AgentOptions{CacheDir: d}, "could not write the agent to "+d, "No space left on device")
		// Only the cache's token may stay (see TestSharedCacheOneUpload).
		var left []string
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			if e.Name() != ".id" {
				left = append(left, e.Name())
			}
		}
		if len(left) != 0 {
			t.Errorf("left behind in the full cache: %v", left)
		}
		_ = b
	})
	t.Run("read-only", func(t *testing.T) {
		m := mount(t, "ro,size=1m")
		mustFail(t, l, "hostile", remote.AgentOptions{CacheDir: filepath.Join(m, "cache")}, "cannot create the agent cache directory "+m+"/cache")
	})
	t.Run("read-only-existing", func(t *testing.T) {
		m := mount(t, "size=1m,mode=0700")
		d := filepath.Join(m, "cache")
		os.Mkdir(d, 0o700)
		if out, err := exec.Command("mount", "-o", "remount,ro", m).CombinedOutput(); err != nil {
			t.Skipf("cannot remount read-only: %v: %s", err, out)
		}
		b := mustFail(t, l, "hostile", remote.AgentOptions{CacheDir: d}, "cannot write in the agent cache directory "+d, "Read-only file system")
		if b.uploads != 0 {
			t.Errorf("%d uploads to a read-only cache", b.uploads)
		}
	})
	t.Run("noexec", func(t *testing.T) {
		m := mount(t, "noexec,size=256m,mode=0700")
		d := filepath.Join(m, "cache")
		fallback := filepath.Join(tmp, "toworker-"+strconv.Itoa(os.Getuid()))
		os.RemoveAll(fallback)
		b := mustBoot(t, l, "hostile", remote.AgentOptions{CacheDir: d})
		if filepath.Dir(b.who.Exe) != fallback || b.uploads != 1 {
			t.Fatalf("agent ran from %s after %d uploads, want from %s after one", b.who.Exe, b.uploads, fallback)
		}
		if !strings.Contains(b.warn, "hostile: the agent cache directory "+d+" does not allow running programs (noexec?): using "+fallback) {
			t.Errorf("no warning about the fallback; warnings: %q", b.warn)
		}
		if fi, err := os.Stat(fallback); err != nil || fi.Mode().Perm() != 0o700 || ownerOf(t, fallback) != os.Getuid() {
			t.Errorf("fallback dir %s: %v %v", fallback, fi.Mode(), err)
		}
		// Next time the agent is found there, still with the warning.
		b = mustBoot(t, l, "hostile", remote.AgentOptions{CacheDir: d})
		if b.uploads != 0 || filepath.Dir(b.who.Exe) != fallback || !strings.Contains(b.warn, "noexec") {
			t.Errorf("second connection: %d uploads, ran %s, warned %q", b.uploads, b.who.Exe, b.warn)
		}
	})
	t.Run("noexec-everywhere", func(t *testing.T) {
		m := mount(t, "noexec,size=256m,mode=0700")
		l2 := newBootLab(t)
		if _, err := l2.AddServer(sshdtest.Options{Name: "noexec", ExtraConfig: []string{"SetEnv TMPDIR=" + m}}); err != nil {
			t.Fatal(err)
		}
		mustFail(t, l2, "noexec", remote.AgentOptions{CacheDir: filepath.Join(m, "cache")}, "nor the fallback", "allows running programs")
	})
}

func TestBootstrapQuoting(t *testing.T) {
	l := newBootLab(t)
	if _, err := l.AddServer(sshdtest.Options{Name: "q"}); err != nil {
		t.Fatal(err)
	}
	var r [6]byte
	rand.Read(r[:])
	pwned := filepath.Join(os.TempDir(), "pwned-"+hex.EncodeToString(r[:]))
	t.Cleanup(func() { os.Remove(pwned) })
	payloads := []string{
		" $(touch " + pwned + ")",
		"`touch " + pwned + "`",
		"'; touch " + pwned + "; '",
		"\"; touch " + pwned + "; \"",
		"\ntouch " + pwned + "\n",
		"$(touch${IFS}" + pwned + ")",
		" && touch " + pwned + " #",
	}
	checkNothingRan := func(t *testing.T) {
		t.Helper()
		if _, err := os.Stat(pwned); err == nil {
			os.Remove(pwned)
			t.Fatalf("a shell ran the payload: %s exists", pwned)
		}
	}
	p, _, _ := newPool(t, remote.PoolConfig{SSH: remote.SSHOptions{ConfigFile: l.ConfigFile}, MinWarm: -1})
	pxConfig := filepath.Join(t.TempDir(), "ssh_config")
	os.WriteFile(pxConfig, []byte("Host px*\n  ProxyCommand /bin/false %h %n %r\n"), 0o600)
	px, _, _ := newPool(t, remote.PoolConfig{SSH: remote.SSHOptions{ConfigFile: pxConfig}, MinWarm: -1})
	for i, pl := range payloads {
		t.Run(fmt.Sprintf("payload%d", i), func(t *testing.T) {
			// Chdir travels in the call frame: no shell sees it.
			dir := "/tmp/x" + pl
			_, err := p.Submit(context.Background(), remote.Job{Host: "q", Chdir: dir, Func: Noop.Name(), NoRetry: true}).Wait()
			var re *remote.RemoteError
			if !errors.As(err, &re) || re.Kind != remote.KindChdir {
				t.Errorf("Chdir %q: err = %v, want a chdir error", dir, err)
			}
			checkNothingRan(t)

			// Host aliases: an error from resolving or connecting, never a
			// command.
			host := "q" + pl
			_, err = p.Submit(context.Background(), remote.Job{Host: host, Func: Noop.Name(), NoRetry: true, Timeout: 10 * time.Second}).Wait()
			if err == nil || !remote.IsFailure(err) {
				t.Errorf("host %q: err = %v, want a connect failure", host, err)
			}
			if strings.ContainsAny(pl, " \n") && !strings.Contains(err.Error(), "bad host name") {
				t.Errorf("host %q: err = %v, want a clear resolve error", host, err)
			}
			checkNothingRan(t)

			// Even where a ProxyCommand would receive them (%h, %r) through
			// sh -c: refused before, like ssh 9.6 does.
			for _, dest := range []string{"px" + pl, "u" + pl + "@px"} {
				_, err = px.Submit(context.Background(), remote.Job{Host: dest, Func: Noop.Name(), NoRetry: true, Timeout: 10 * time.Second}).Wait()
				if err == nil || !strings.Contains(err.Error(), "invalid characters") && !strings.Contains(err.Error(), "bad host name") {
					t.Errorf("destination %q with a ProxyCommand: err = %v, want a clear resolve error", dest, err)
				}
				checkNothingRan(t)
			}

			// User names go to sshd's authentication, nowhere else.
			up, _, _ := newPool(t, remote.PoolConfig{SSH: remote.SSHOptions{ConfigFile: l.ConfigFile, User: "root" + pl}, MinWarm: -1})
			_, err = up.Submit(context.Background(), remote.Job{Host: "q", Func: Noop.Name(), NoRetry: true, Timeout: 10 * time.Second}).Wait()
			if err == nil {
				t.Errorf("user %q: logged in", "root"+pl)
			}
			up.Close()
			checkNothingRan(t)

			// Cache directories and pre-installed paths: refused up front
			// when they hold what a shell would interpret, otherwise used
			// literally.
			cd := filepath.Join(t.TempDir(), "cache"+pl)
			err = newPoolErr(remote.AgentOptions{CacheDir: cd})
			if quotableForTest(cd) {
				if err != nil {
					t.Fatalf("CacheDir %q refused: %v", cd, err)
				}
				b := mustBoot(t, l, "q", remote.AgentOptions{CacheDir: cd})
				if filepath.Dir(b.who.Exe) != cd {
					t.Errorf("CacheDir %q: agent ran from %s", cd, b.who.Exe)
				}
			} else if err == nil || !strings.Contains(err.Error(), "cannot quote") {
				t.Errorf("CacheDir %q: NewPool err = %v, want it refused", cd, err)
			}
			err = newPoolErr(remote.AgentOptions{Path: "/opt/agent" + pl})
			if quotableForTest("/opt/agent"+pl) != (err == nil) {
				t.Errorf("Path %q: NewPool err = %v", "/opt/agent"+pl, err)
			}
			checkNothingRan(t)
		})
	}
}

// newPoolErr returns NewPool's error for a pool with agent options ao.
func newPoolErr(ao remote.AgentOptions) error {
	p, err := remote.NewPool(context.Background(), remote.PoolConfig{Agent: ao})
	if err == nil {
		p.Kill()
	}
	return err
}

// quotableForTest is what the bootstrap can put between double quotes.
func quotableForTest(s string) bool { return !strings.ContainsAny(s, "'\"\\!$`\n\r\t") }

// The agent starts on the first frames sent with the exec where sshd
// accepts the variable, on an upload as on a cached start, and on stdin's
// where it does not or where AgentOptions.StdinOnly says not to send them.
func TestBootstrapFirstFramesInEnvironment(t *testing.T) {
	l := newBootLab(t)
	if _, err := l.AddServer(sshdtest.Options{Name: "envok", ExtraConfig: []string{"AcceptEnv LANG LC_*"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.AddServer(sshdtest.Options{Name: "noenv"}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		host          string
		ao            remote.AgentOptions
		uploads, envs int
	}{
		{"envok", remote.AgentOptions{}, 1, 1}, // first ever: upload, then the frames again on stdin
		{"envok", remote.AgentOptions{}, 0, 1},
		{"envok", remote.AgentOptions{StdinOnly: true}, 0, 0},
		{"noenv", remote.AgentOptions{}, 1, 0},
		{"noenv", remote.AgentOptions{}, 0, 0},
	}
	for i, tt := range tests {
		b := mustBoot(t, l, tt.host, tt.ao)
		if b.uploads != tt.uploads || b.envs != tt.envs {
			t.Errorf("%d: %s %+v: uploads %d, env starts %d; want %d, %d", i, tt.host, tt.ao, b.uploads, b.envs, tt.uploads, tt.envs)
		}
		if b.who.UID != os.Getuid() {
			t.Errorf("%d: %s: job ran as uid %d", i, tt.host, b.who.UID)
		}
	}
}

// A job whose timeout passes while its host is still being connected (here:
// the agent is being uploaded) fails with a timeout, but the connection goes
// on being made for the jobs after it, and the job's call, given up before
// the bootstrap, never runs on the host.
func TestConnectOutlivesShortJobTimeout(t *testing.T) {
	l := newBootLab(t)
	srv, err := l.AddServer(sshdtest.Options{Name: "fresh"})
	if err != nil {
		t.Fatal(err)
	}
	var out lockedBuf
	p, err := remote.NewPool(context.Background(), remote.PoolConfig{Hosts: []string{"fresh"}, MinWarm: -1, ConnectTimeout: 60 * time.Second,
		SSH: remote.SSHOptions{ConfigFile: l.ConfigFile}, Stdout: &out, Stderr: &out})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	marker := filepath.Join(t.TempDir(), "ran")
	_, err = p.Submit(context.Background(), remote.Job{Host: "fresh", Func: agent.Exec.Name(), NoRetry: true, Timeout: time.Millisecond,
		Data: agent.ExecIn{Argv: []string{"touch", marker}}}).Wait()
	if !errors.Is(err, remote.ErrTimeout) {
		t.Fatalf("job with a 1 ms timeout: %v, want ErrTimeout", err)
	}
	// The next job finds the connection made (or being made) by the first.
	if _, err := remote.CallOn(context.Background(), p, "fresh", Whoami, struct{}{}); err != nil {
		t.Fatal(err)
	}
	st := p.Stats().Hosts["fresh"]
	if n := strings.Count(srv.Log(), "Accepted publickey"); st.Uploads != 1 || n != 1 {
		t.Errorf("%d uploads and %d logins, want 1 and 1: the first connection was not kept", st.Uploads, n)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("the timed-out job's command ran on the host")
	}
}

// Procs is what a job sees of GOMAXPROCS.
type Procs struct {
	Env   string // the variable, or "<unset>"
	Procs int    // runtime.GOMAXPROCS(0)
	Kept  bool   // wire.EnvGOMAXPROCS is visible (it must not be)
}

func procsInfo(ctx context.Context, _ struct{}) (Procs, error) {
	p := Procs{Env: "<unset>", Procs: runtime.GOMAXPROCS(0)}
	if v, ok := os.LookupEnv("GOMAXPROCS"); ok {
		p.Env = v
	}
	_, p.Kept = os.LookupEnv(wire.EnvGOMAXPROCS)
	return p, nil
}

// ProcsInfo runs in a worker, InlineProcsInfo in the boss.
var (
	ProcsInfo       = agent.Register("test.procs", procsInfo)
	InlineProcsInfo = agent.Register("test.inlineprocs", procsInfo, agent.Inline())
)

// defaultProcs is the Go runtime's default GOMAXPROCS on this machine,
// which a worker on the lab's hosts (the same machine, the same cgroup)
// gets when its environment has no GOMAXPROCS.
func defaultProcs() int {
	if _, set := os.LookupEnv("GOMAXPROCS"); !set {
		return runtime.GOMAXPROCS(0) // go test leaves it alone without -cpu
	}
	return runtime.NumCPU()
}

// The bootstrap starts the boss with GOMAXPROCS=1, and the boss puts the
// login environment's GOMAXPROCS back before it starts anything: workers
// and commands get the user's value, or none; the boss runs on one
// processor; nothing sees the variable that carried the value.
func TestBootstrapKeepsUsersGOMAXPROCS(t *testing.T) {
	l := newBootLab(t)
	if _, err := l.AddServer(sshdtest.Options{Name: "procs3", ExtraConfig: []string{"SetEnv GOMAXPROCS=3"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.AddServer(sshdtest.Options{Name: "procsnone"}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		host, env string
		procs     int
	}{
		{"procs3", "3", 3},
		{"procsnone", "<unset>", defaultProcs()},
	} {
		var out lockedBuf
		p, err := remote.NewPool(context.Background(), remote.PoolConfig{Hosts: []string{tt.host},
			SSH: remote.SSHOptions{ConfigFile: l.ConfigFile}, Stdout: &out, Stderr: &out})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		w, err := remote.CallOn(ctx, p, tt.host, ProcsInfo, struct{}{})
		if err != nil {
			t.Fatal(err)
		}
		if w != (Procs{Env: tt.env, Procs: tt.procs}) {
			t.Errorf("%s: a worker sees %+v, want GOMAXPROCS %s and %d processors", tt.host, w, tt.env, tt.procs)
		}
		b, err := remote.CallOn(ctx, p, tt.host, InlineProcsInfo, struct{}{})
		if err != nil {
			t.Fatal(err)
		}
		if b != (Procs{Env: tt.env, Procs: 1}) {
			t.Errorf("%s: the boss sees %+v, want GOMAXPROCS %s in its environment and 1 processor", tt.host, b, tt.env)
		}
		if _, err := remote.CallOn(ctx, p, tt.host, agent.Exec, agent.ExecIn{Command: "echo ${GOMAXPROCS-unset} ${" + wire.EnvGOMAXPROCS + "-unset}"}); err != nil {
			t.Fatal(err)
		}
		want := strings.ReplaceAll(tt.env, "<unset>", "unset")
		if got := out.String(); got != tt.host+": "+want+" unset\n" {
			t.Errorf("%s: a command prints %q, want GOMAXPROCS %s and no %s", tt.host, got, want, wire.EnvGOMAXPROCS)
		}
		p.Close()
	}
}

// TestChattyLoginShell: shell start-up files that print (a banner in
// .bashrc, a tool's "conda activated" line, a stray printf with no
// newline) come before anything the bootstrap prints, on the session's
// stdout. The agent must start whatever they print, uploaded or cached,
// and none of it may reach a job's output.
func TestChattyLoginShell(t *testing.T) {
	needRoot(t, "logs in as a throwaway user whose login shell is bash")
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatal(err)
	}
	const user = "twsh-bash"
	if err := sshdtest.EnsureUser(user, bash); err != nil {
		t.Fatal(err)
	}
	l := newBootLab(t)
	for _, tt := range []struct{ name, rc string }{
		{"lines", `i=0; while [ $i -lt 200 ]; do echo "Welcome to this host, line $i"; i=$((i+1)); done; echo "to stderr too" >&2`},
		{"no-newline", `printf 'Last login: never'`},
		{"carriage-return", `printf 'progress 10%%\rprogress 100%%\r'`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir, err := os.MkdirTemp("", "chatty")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			if err := os.Chmod(dir, 0o777); err != nil { // the login user's to read and write
				t.Fatal(err)
			}
			// The session's HOME is dir, whose .bashrc bash reads when sshd
			// runs it (Debian's SSH_SOURCE_BASHRC); a bash built without
			// that reads BASH_ENV instead.
			rc := filepath.Join(dir, ".bashrc")
			mark := filepath.Join(dir, "sourced")
			if err := os.WriteFile(rc, []byte("touch "+mark+"; "+tt.rc+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			srv, err := l.AddServer(sshdtest.Options{Name: "chatty-" + tt.name, User: user, LoginShell: bash,
				ExtraConfig: []string{"SetEnv HOME=" + dir + " BASH_ENV=" + rc}})
			if err != nil {
				t.Fatal(err)
			}
			os.RemoveAll(filepath.Join(srv.CacheDir, "toworker"))
			for i, uploads := range []int{1, 0} { // first ever, then cached
				b := mustBoot(t, l, srv.Name, remote.AgentOptions{})
				if b.uploads != uploads {
					t.Errorf("start %d: %d uploads, want %d", i, b.uploads, uploads)
				}
				if b.out != "" || b.warn != "" {
					t.Errorf("start %d: the shell's chatter reached the pool's output %q or warnings %q", i, b.out, b.warn)
				}
				if _, err := os.Stat(mark); err != nil {
					t.Fatalf("the login shell did not read its start-up file, so this tests nothing: %v", err)
				}
			}
			// A refusal comes after the chatter too, and is read as one.
			mustFail(t, l, srv.Name, remote.AgentOptions{CacheDir: rc}, "the agent cache directory "+rc+" is not a directory owned by this user")
		})
	}
}

// TestLoginRefused: an account whose login shell refuses commands
// (nologin, false) fails the connect at once, with what the shell said.
func TestLoginRefused(t *testing.T) {
	needRoot(t, "creates throwaway users whose login shell refuses commands")
	l := newBootLab(t)
	for _, tt := range []struct{ shell, says string }{
		{"/usr/sbin/nologin", "This account is currently not available."},
		{"/bin/false", "exited with status 1"},
	} {
		t.Run(filepath.Base(tt.shell), func(t *testing.T) {
			if _, err := os.Stat(tt.shell); err != nil {
				t.Fatalf("%s: %v", tt.shell, err)
			}
			user := "twsh-" + filepath.Base(tt.shell)
			if err := sshdtest.EnsureUser(user, tt.shell); err != nil {
				t.Fatal(err)
			}
			srv, err := l.AddServer(sshdtest.Options{Name: "refused-" + filepath.Base(tt.shell), User: user, LoginShell: tt.shell})
			if err != nil {
				t.Fatal(err)
			}
			mustFail(t, l, srv.Name, remote.AgentOptions{}, tt.says)
		})
	}
}

// TestSendEnvAndSetEnv: the session gets the variables ssh would send
// (SendEnv's local variables, SetEnv's), where sshd accepts them, and the
// jobs see them; a variable SendEnv does not name stays home.
func TestSendEnvAndSetEnv(t *testing.T) {
	l := newBootLab(t)
	srv, err := l.AddServer(sshdtest.Options{Name: "env", ExtraConfig: []string{"AcceptEnv TW_*"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("TW_SEND", "sent value")
	t.Setenv("TW_OTHER", "not named")
	var warn lockedBuf
	p, err := remote.NewPool(context.Background(), remote.PoolConfig{Hosts: []string{srv.Name}, MinWarm: -1,
		SSH: remote.SSHOptions{ConfigFile: l.ConfigFile, Warn: &warn,
			Options: []string{"SendEnv=TW_SEND TW_NOTSET", `SetEnv=TW_SET="a b" TW_SEND=overridden`}}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for name, want := range map[string]string{"TW_SEND": "overridden", "TW_SET": "a b", "TW_OTHER": "<unset>", "TW_NOTSET": "<unset>"} {
		for _, fn := range []agent.Func[string, string]{Getenv, InlineGetenv} {
			got, err := remote.CallOn(ctx, p, srv.Name, fn, name)
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("%s in %s: %q, want %q", name, fn.Name(), got, want)
			}
		}
	}
}
