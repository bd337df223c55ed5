package remote

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/toworker/toworker/internal/sshdial"
	"github.com/toworker/toworker/internal/wire"
)

// SetTmpToken makes the bootstrap's temporary upload file .tmp.<tok> for
// the rest of the test (the external tests plant things at that name).
func SetTmpToken(t testing.TB, tok string) {
	old := newTmpToken
	newTmpToken = func() string { return tok }
	t.Cleanup(func() { newTmpToken = old })
}

// buildArm64Agent cross-builds an agent for linux/arm64 into a temporary
// directory, as agent-linux-arm64: ./cmd/toworker, or, if that does not
// build (yet), remote/testdata/agentmain.
func buildArm64Agent(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = "/usr/local/go/bin/go" // where this project's machines have it
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "agent-linux-arm64")
	var logs []string
	for _, pkg := range []string{"./cmd/toworker", "./remote/testdata/agentmain"} {
		cmd := exec.Command(goTool, "build", "-o", out, pkg)
		cmd.Dir = ".."
		// TestMain points HOME at the lab: give go its real caches back.
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=arm64")
		if u, err := user.Current(); err == nil && u.HomeDir != "" {
			cmd.Env = append(cmd.Env, "HOME="+u.HomeDir)
		}
		b, err := cmd.CombinedOutput()
		if err == nil {
			return dir
		}
		logs = append(logs, pkg+": "+err.Error()+": "+string(b))
		t.Logf("cross-building %s for linux/arm64 failed; trying the next candidate: %v", pkg, err)
	}
	t.Fatalf("cannot cross-build an arm64 agent:\n%s", strings.Join(logs, "\n"))
	return ""
}

func TestForUnameArm64(t *testing.T) {
	dir := buildArm64Agent(t)
	path := filepath.Join(dir, "agent-linux-arm64")
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if f.Machine != elf.EM_AARCH64 {
		t.Fatalf("%s is for %v, not aarch64", path, f.Machine)
	}
	f.Close()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(raw)
	want := hex.EncodeToString(sum[:])

	s, err := agentsFor(AgentOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"Linux aarch64", "Linux arm64", "Linux aarch64\n"} {
		b, err := s.forUname(u)
		if err != nil {
			t.Fatalf("forUname(%q): %v", u, err)
		}
		if b.plat != (platform{"linux", "arm64"}) || b.path != path {
			t.Fatalf("forUname(%q) = %s %s, want linux/arm64 %s", u, b.plat, b.path, path)
		}
		if b.hash != want {
			t.Fatalf("hash %s, want %s", b.hash, want)
		}
		zr, err := gzip.NewReader(bytes.NewReader(b.gz))
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(zr)
		if err != nil || !bytes.Equal(got, raw) {
			t.Fatalf("the upload does not decompress to the binary (%v)", err)
		}
	}
	// The host's own platform still gets the master's executable.
	self, err := s.forUname(hostUname(t))
	if err != nil || self != s.self {
		t.Fatalf("forUname(this host) = %v, %v; want the master's own agent", self, err)
	}
	// Once the arm64 hash is known, the script recognises arm64 hosts
	// without asking.
	sc, err := s.script(nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(sc, `"Linux aarch64") h=`+want) {
		t.Errorf("script does not map Linux aarch64 to %s:\n%s", want, sc)
	}
	// The platform each host reported is remembered: the next script for
	// it names the agent without running uname first.
	tgt := &sshdial.Target{HostName: "arm-box", Port: 22}
	s.started(tgt, &wire.Hello{OS: "linux", Arch: "arm64"})
	sc, err = s.script(tgt)
	if err != nil {
		t.Fatal(err)
	}
	// The upload path begins where the script creates the cache directory.
	const uploadPath = `; mkdir -p "$d" `
	head, _, _ := strings.Cut(sc, uploadPath)
	if strings.Contains(head, "uname") || !strings.Contains(sc, "; h="+want+";") {
		t.Errorf("script for a remembered arm64 host runs uname before the cache lookup or lacks its hash:\n%s", sc)
	}
	if _, need, ok := strings.Cut(sc, uploadPath); !ok || !strings.Contains(need, `p=$(uname -sm)`) {
		t.Errorf("script for a remembered host does not detect the platform before an upload:\n%s", sc)
	}
}

// hostUname returns what uname -sm prints here.
func hostUname(t *testing.T) string {
	out, err := exec.Command("uname", "-sm").Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

func TestForUnameUnknown(t *testing.T) {
	s, err := agentsFor(AgentOptions{})
	if err != nil {
		t.Fatal(err)
	}
	here := runtime.GOOS + "/" + runtime.GOARCH
	for _, tt := range []struct{ uname, says string }{
		{"Plan9 mips", `no agent binary for platform "Plan9 mips"; available: ` + here},
		{"Darwin arm64", `no agent binary for platform darwin/arm64 (uname "Darwin arm64"); available: ` + here},
	} {
		if runtime.GOOS+"/"+runtime.GOARCH == "darwin/arm64" && strings.HasPrefix(tt.uname, "Darwin") {
			continue
		}
		_, err := s.forUname(tt.uname)
		if err == nil || !strings.Contains(err.Error(), tt.says) || !strings.Contains(err.Error(), "make agents") {
			t.Errorf("forUname(%q) = %v, want an error saying %q and how to build more", tt.uname, err, tt.says)
		}
	}
}

// TestScriptQuotable checks what every login shell needs of the command:
// one line, and in the script no single quote, backslash or exclamation
// mark, whatever the options.
func TestScriptQuotable(t *testing.T) {
	tgt := &sshdial.Target{HostName: "quotable", Port: 22}
	for _, o := range []AgentOptions{
		{},
		{CacheDir: "/srv/cache dir; with (odd) & chars #1 ~ * ? [x] {y} | < > %"},
		{Path: "/opt/tool chain/agent"},
		{Become: "app-user.1"},
		{Become: "svc", CacheDir: "/var/cache/tw"},
		{Become: "_x-1.a"},
		{Become: strings.Repeat("a", 64)},
		{KeepVersions: -1},
		{KeepVersions: 10},
	} {
		s, err := agentsFor(o)
		if err != nil {
			t.Fatalf("%+v: %v", o, err)
		}
		for _, tg := range []*sshdial.Target{nil, tgt} {
			sc, err := s.script(tg)
			if err != nil {
				t.Fatal(err)
			}
			if strings.ContainsAny(sc, "'\\!\n\r") {
				t.Errorf("%+v: script has a character a login shell would interpret:\n%s", o, sc)
			}
			cmd, err := s.command(tg)
			if err != nil {
				t.Fatal(err)
			}
			if strings.ContainsAny(cmd, "\\!\n\r") {
				t.Errorf("%+v: command has a character a login shell would interpret:\n%s", o, cmd)
			}
		}
		s.started(tgt, &wire.Hello{OS: runtime.GOOS, Arch: runtime.GOARCH})
	}
	for _, bad := range []AgentOptions{
		{CacheDir: "relative/dir"},
		{CacheDir: "/tmp/x $(touch /tmp/pwned)"},
		{CacheDir: "/tmp/x`id`"},
		{CacheDir: "/tmp/x'y"},
		{CacheDir: `/tmp/x"y`},
		{CacheDir: `/tmp/x\y`},
		{CacheDir: "/tmp/x!y"},
		{CacheDir: "/tmp/x\ny"},
		{CacheDir: "/tmp/x\ty"},
		{CacheDir: "/tmp/x\xffy"},
		{Path: "agent"},
		{Path: "/opt/agent $(reboot)"},
		{Path: "/opt/agent\n"},
		{Become: "root; touch /tmp/pwned"},
		{Become: "-u"},
		{Become: "a b"},
		{Become: "$(id)"},
		{Become: "x\n"},
		{Become: ".hidden"},
		{Become: "usér"},
		{Become: strings.Repeat("a", 65)},
	} {
		if _, err := agentsFor(bad); err == nil || !strings.HasPrefix(err.Error(), "remote: ") {
			t.Errorf("agentsFor(%+v) = %v, want a remote: error", bad, err)
		}
	}
}

// On a host without the agent, the script asks for it before it reads
// anything from stdin: over OpenSSH the master's first frames reach stdin
// only a round trip after the exec, and the question need not wait for
// them. It then discards them, reads the answer ("none none" here) and
// leaves no temporary file.
func TestScriptAsksBeforeReadingStdin(t *testing.T) {
	s, err := agentsFor(AgentOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sc, err := s.script(nil)
	if err != nil {
		t.Fatal(err)
	}
	home := t.TempDir()
	cmd, stdin, next := startScript(t, sc, home)
	if l := next(); !strings.HasPrefix(l, wire.NeedPrefix) {
		t.Fatalf("the script printed %q, want %q first", l, wire.NeedPrefix)
	}
	// The master's preamble and frames, then its answer.
	io.WriteString(stdin, wire.MasterPreamble+" 1 5\nframe"+"none none\n")
	stdin.Close()
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 103 {
		t.Fatalf("script ended with %v, want exit status 103 (no agent for the platform)", err)
	}
	left, _ := filepath.Glob(filepath.Join(home, ".cache", "toworker", ".tmp.*"))
	if len(left) != 0 {
		t.Errorf("temporary files left: %q", left)
	}
}

// When the master answers "again" (another host sharing the cache has just
// received the agent), the script looks in the cache once more: it runs the
// agent it finds there, or, finding none, takes a token of its own and asks
// as any host would, without a token.
func TestScriptLooksAgainAfterSharedUpload(t *testing.T) {
	s, err := agentsFor(AgentOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.self.loadHash(); err != nil {
		t.Fatal(err)
	}
	const copied = "0123456789abcdef01234567"
	frames := wire.MasterPreamble + " 1 5\nframe"
	for _, found := range []bool{false, true} {
		t.Run(fmt.Sprintf("found=%v", found), func(t *testing.T) {
			sc, err := s.script(nil)
			if err != nil {
				t.Fatal(err)
			}
			home := t.TempDir()
			cache := filepath.Join(home, ".cache", "toworker")
			if err := os.MkdirAll(cache, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(cache, ".id"), []byte(copied+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			cmd, stdin, next := startScript(t, sc, home)
			need := strings.Fields(strings.TrimPrefix(next(), wire.NeedPrefix))
			if len(need) != 3 || need[2] != copied {
				t.Fatalf("first question %q, want the platform and the cache's token %s", need, copied)
			}
			if found {
				// What the other host's upload left in the shared cache.
				exe, err := os.ReadFile(s.self.path)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(cache, s.self.hash), exe, 0o700); err != nil {
					t.Fatal(err)
				}
			}
			io.WriteString(stdin, frames+"again "+s.self.hash+"\n"+frames)
			l := next()
			if found {
				if l != wire.AgentMarker {
					t.Fatalf("after looking again the script printed %q, want the agent's %q", l, wire.AgentMarker)
				}
				return
			}
			if f := strings.Fields(strings.TrimPrefix(l, wire.NeedPrefix)); !strings.HasPrefix(l, wire.NeedPrefix) || len(f) != 2 {
				t.Fatalf("second question %q, want the platform alone", l)
			}
			io.WriteString(stdin, "none none\n") // the copy of the frames after "again" was discarded
			stdin.Close()
			err = cmd.Wait()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 103 {
				t.Fatalf("script ended with %v, want exit status 103; then it said %q", err, next())
			}
			if b, _ := os.ReadFile(filepath.Join(cache, ".id")); strings.TrimSpace(string(b)) == copied || !cacheToken(strings.TrimSpace(string(b))) {
				t.Errorf("the cache's token is %q after finding nothing, want a new one", b)
			}
		})
	}
}

// startScript runs the bootstrap script sc with /bin/sh, as the login user
// whose home is home. It returns the running command, its stdin, and next,
// which returns the next line the script prints (failing the test when
// none comes within 20 s). The script is killed at the test's end.
func startScript(t *testing.T, sc, home string) (cmd *exec.Cmd, stdin io.WriteCloser, next func() string) {
	t.Helper()
	cmd = exec.Command("/bin/sh", "-c", sc)
	cmd.Env = []string{"HOME=" + home, "TMPDIR=" + home, "PATH=" + os.Getenv("PATH")}
	stdin, next = runScript(t, cmd)
	return cmd, stdin, next
}

// runScript starts cmd, a bootstrap script, and returns its stdin and a
// function that returns its next line of output.
func runScript(t *testing.T, cmd *exec.Cmd) (stdin io.WriteCloser, next func() string) {
	t.Helper()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lines := make(chan string, 4)
	go func() {
		defer close(lines)
		br := bufio.NewReader(stdout)
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				return
			}
			lines <- strings.TrimSuffix(l, "\n")
		}
	}()
	return stdin, func() string {
		t.Helper()
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("the script's output ended")
			}
			return l
		case <-time.After(20 * time.Second):
			t.Fatal("the script said nothing more")
			return ""
		}
	}
}

// TestScriptUnderBusybox runs the bootstrap as on Alpine or a small
// embedded system: its shell is busybox's ash and every tool it calls
// (stat, sha256sum, gzip, head, ls, ...) a busybox applet, nothing else on
// PATH. The first run asks for the agent, checks and installs the upload
// and starts it; the second finds it, by its stamp, and starts it at once.
func TestScriptUnderBusybox(t *testing.T) {
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatal("busybox is not installed: run `make setup`")
	}
	bin := t.TempDir()
	if out, err := exec.Command(busybox, "--install", "-s", bin).CombinedOutput(); err != nil {
		t.Fatalf("busybox --install: %v: %s", err, out)
	}
	s, err := agentsFor(AgentOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.self.load(); err != nil {
		t.Fatal(err)
	}
	sc, err := s.script(nil)
	if err != nil {
		t.Fatal(err)
	}
	home := t.TempDir()
	cache := filepath.Join(home, ".cache", "toworker")
	frames := wire.MasterPreamble + " 1 5\nframe"
	start := func() (io.WriteCloser, func() string) {
		cmd := exec.Command(filepath.Join(bin, "sh"), "-c", sc)
		cmd.Env = []string{"HOME=" + home, "TMPDIR=" + home, "PATH=" + bin}
		cmd.Stderr = &testWriter{t}
		stdin, next := runScript(t, cmd)
		io.WriteString(stdin, frames)
		return stdin, next
	}

	// The upload is written at once, as if the master's answer had
	// arrived before the script began to discard the first frames: a
	// reader of stdin that reads ahead would swallow it. The agent's
	// frames follow its marker, as the master sends them.
	stdin, next := start()
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		fmt.Fprintf(stdin, "%d %s\n", len(s.self.gz), s.self.hash)
		stdin.Write(s.self.gz)
	}()
	if l := next(); !strings.HasPrefix(l, wire.NeedPrefix) {
		t.Fatalf("first run: the script printed %q, want %q", l, wire.NeedPrefix)
	}
	if l := next(); l != wire.AgentMarker {
		t.Fatalf("after the upload the script printed %q, want the agent's %q", l, wire.AgentMarker)
	}
	<-sent
	io.WriteString(stdin, frames)
	stamp, err := os.ReadFile(filepath.Join(cache, s.self.hash+".ok"))
	if err != nil || strings.Count(string(stamp), ":") != 3 {
		t.Fatalf("the agent's stamp after the upload: %q %v", stamp, err)
	}

	_, next = start()
	if l := next(); l != wire.AgentMarker {
		t.Fatalf("second run: the script printed %q, want the cached agent's %q", l, wire.AgentMarker)
	}
	left, _ := filepath.Glob(filepath.Join(cache, ".tmp.*"))
	if len(left) != 0 {
		t.Errorf("temporary files left: %q", left)
	}
}

// testWriter logs what is written to it.
type testWriter struct{ t *testing.T }

func (w *testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", bytes.TrimSpace(p))
	return len(p), nil
}
