package cli

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toworker/toworker/internal/sshdtest"
)

// hostIs is a shell condition true on lab host h<n> only: each lab server
// listens on its own loopback address, which sshd puts in SSH_CONNECTION.
func hostIs(n int) string {
	return `case "$SSH_CONNECTION" in *" ` + lab.Servers[n-1].Host + ` "*) true;; *) false;; esac`
}

func TestRunRangesPrefixAndStreams(t *testing.T) {
	r := cli(t, "run", "-H", "h[1-3]", "--", "echo out; echo err >&2")
	if r.code != ExitOK {
		t.Fatalf("exit %d, want 0; stderr:\n%s", r.code, r.stderr)
	}
	for _, h := range []string{"h1", "h2", "h3"} {
		if !has(r.stdout, h+": out") {
			t.Errorf("stdout lacks %q:\n%s", h+": out", r.stdout)
		}
		if !has(r.stderr, h+": err") {
			t.Errorf("stderr lacks %q:\n%s", h+": err", r.stderr)
		}
	}
	if strings.Contains(r.stdout, "err") || strings.Contains(r.stderr, ": out") {
		t.Errorf("streams mixed:\nstdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	}
	if len(lines(r.stdout)) != 3 {
		t.Errorf("stdout has %d lines, want 3:\n%s", len(lines(r.stdout)), r.stdout)
	}
	if !strings.Contains(r.stderr, "3 hosts") || !strings.Contains(r.stderr, "3 ok") {
		t.Errorf("no summary on stderr:\n%s", r.stderr)
	}
	// Command words are joined and run by the shell, as ssh does.
	r = cli(t, "run", "-H", "h1", "echo", "a", "b", "|", "tr", "a", "x")
	if r.code != 0 || !has(r.stdout, "h1: x b") {
		t.Errorf("joined words: exit %d stdout %q", r.code, r.stdout)
	}
	// -N drops the prefix; -q the summary.
	r = cli(t, "run", "-N", "-q", "-H", "h1", "--", "echo plain")
	if r.code != 0 || r.stdout != "plain\n" || r.stderr != "" {
		t.Errorf("-N -q: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
}

func TestHostFileStdinAndExclude(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "hosts")
	os.WriteFile(file, []byte("# the lab\nh[1-2]   # two\n\nh4\n"), 0o644)
	r := cli(t, "run", "-f", file, "-x", "h2", "--", "echo hi")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if got := strings.Join(sortedLines(r.stdout), ","); got != "h1: hi,h4: hi" {
		t.Errorf("stdout = %q, want h1 and h4", got)
	}
	r = cliCtx(t, context.Background(), strings.NewReader("h3\n# no\nh[1-1]\n"), "run", "-H", "-", "--", "echo hi")
	if got := strings.Join(sortedLines(r.stdout), ","); r.code != 0 || got != "h1: hi,h3: hi" {
		t.Errorf("-H -: exit %d stdout %q", r.code, got)
	}
	// A malformed expression points at the bad character.
	r = cli(t, "run", "-H", "h[1-x]", "--", "true")
	if r.code != ExitUsage || !strings.Contains(r.stderr, "h[1-x]\n") || !strings.Contains(r.stderr, "     ^") {
		t.Errorf("bad expression: exit %d stderr:\n%s", r.code, r.stderr)
	}
	os.WriteFile(file, []byte("h1\nh[2\n"), 0o644)
	r = cli(t, "run", "-f", file, "--", "true")
	if r.code != ExitUsage || !strings.Contains(r.stderr, "line 2") {
		t.Errorf("bad host file: exit %d stderr:\n%s", r.code, r.stderr)
	}
}

func sortedLines(s string) []string {
	l := lines(s)
	for i := range l {
		for j := i + 1; j < len(l); j++ {
			if l[j] < l[i] {
				l[i], l[j] = l[j], l[i]
			}
		}
	}
	return l
}

func TestChdirAndLoginDir(t *testing.T) {
	dir := t.TempDir()
	r := cli(t, "run", "-H", "h1", "-C", dir, "--", "pwd")
	if r.code != 0 || !has(r.stdout, "h1: "+dir) {
		t.Errorf("-C: exit %d stdout %q", r.code, r.stdout)
	}
	// Without -C, the login directory, as ssh.
	r = cli(t, "run", "-H", "h1", "--", `[ "$(pwd)" = "$HOME" ] && echo home`)
	if r.code != 0 || !has(r.stdout, "h1: home") {
		t.Errorf("login dir: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	// A plain command too (the agent runs it without a shell); a HOME that
	// cannot be entered leaves it in the agent's directory, /.
	r = cli(t, "run", "-H", "h1", "-e", "HOME="+dir, "--", "/bin/pwd")
	if r.code != 0 || !has(r.stdout, "h1: "+dir) {
		t.Errorf("login dir, plain command: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	r = cli(t, "run", "-H", "h1", "-e", "HOME=/no/such/dir", "--", "/bin/pwd")
	if r.code != 0 || !has(r.stdout, "h1: /") {
		t.Errorf("no login dir: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	r = cli(t, "run", "-H", "h1", "-C", "/no/such/dir", "--", "pwd")
	if r.code != ExitFailed || !strings.Contains(r.stderr, "no such file") {
		t.Errorf("bad -C: exit %d stderr %q", r.code, r.stderr)
	}
}

func TestSSHFlagsOverrideConfig(t *testing.T) {
	h1, h2 := lab.Servers[0], lab.Servers[1]
	// -o Port= of another host: nothing listens there on h1's address.
	r := cli(t, "run", "-H", "h1", "-o", "Port="+strconv.Itoa(h2.Port), "-t", "5s", "--", "true")
	if r.code != ExitUnreachable || !strings.Contains(r.stderr, "unreachable") {
		t.Errorf("-o Port=other: exit %d, want %d; stderr:\n%s", r.code, ExitUnreachable, r.stderr)
	}
	r = cli(t, "run", "-H", "h1", "-p", strconv.Itoa(h2.Port), "-t", "5s", "--", "true")
	if r.code != ExitUnreachable {
		t.Errorf("-p other: exit %d, want %d", r.code, ExitUnreachable)
	}
	r = cli(t, "run", "-H", "h1", "-p", strconv.Itoa(h1.Port), "--", "echo ok")
	if r.code != 0 || !has(r.stdout, "h1: ok") {
		t.Errorf("-p own port: exit %d stderr %s", r.code, r.stderr)
	}
	// An address instead of an alias works with -p, -l, -i and -o for the rest.
	r = cli(t, "run", "-H", h1.Host, "-p", strconv.Itoa(h1.Port), "-l", h1.User, "-i", lab.IdentityFile,
		"-o", "UserKnownHostsFile="+lab.KnownHostsFile, "-o", "StrictHostKeyChecking=yes", "--", "echo ok")
	if r.code != 0 || !has(r.stdout, h1.Host+": ok") {
		t.Errorf("address with -p -l -i -o: exit %d stderr %s", r.code, r.stderr)
	}
}

func TestExitStatusesAndFailedFile(t *testing.T) {
	dir := t.TempDir()
	failed := filepath.Join(dir, "failed")
	// h2 fails: exit status 1.
	r := cli(t, "run", "-H", "h[1-3]", "--failed-file", failed, "--", hostIs(2)+" && exit 7; echo fine")
	if r.code != ExitFailed {
		t.Errorf("exit %d, want %d; stderr:\n%s", r.code, ExitFailed, r.stderr)
	}
	if !strings.Contains(r.stderr, "h2: exit status 7") || !strings.Contains(r.stderr, "2 ok, 1 failed") {
		t.Errorf("summary:\n%s", r.stderr)
	}
	if b, _ := os.ReadFile(failed); string(b) != "h2\n" {
		t.Errorf("failed file = %q, want h2", b)
	}
	// A signal is a failure too.
	r = cli(t, "run", "-H", "h1", "--", "kill -TERM $$")
	if r.code != ExitFailed || !strings.Contains(r.stderr, "killed by signal") {
		t.Errorf("signal: exit %d stderr:\n%s", r.code, r.stderr)
	}

	// h4 down as well: 3 wins over 1.
	h4 := lab.Servers[3]
	if err := h4.Kill(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h4.Restart() })
	r = cli(t, "run", "-H", "h[1-4]", "--failed-file", failed, "--", hostIs(2)+" && exit 7; echo fine")
	if r.code != ExitUnreachable {
		t.Errorf("exit %d, want %d; stderr:\n%s", r.code, ExitUnreachable, r.stderr)
	}
	if !regexp.MustCompile(`unreachable +h4: connect: .*refused`).MatchString(r.stderr) {
		t.Errorf("no reason for h4 in summary:\n%s", r.stderr)
	}
	if b, _ := os.ReadFile(failed); string(b) != "h2\nh4\n" {
		t.Errorf("failed file = %q, want h2 h4", b)
	}
	// Retry exactly the failed hosts once h4 is back.
	if err := h4.Restart(); err != nil {
		t.Fatal(err)
	}
	r = cli(t, "run", "-f", failed, "--failed-file", failed, "--", "echo again")
	if got := strings.Join(sortedLines(r.stdout), ","); r.code != 0 || got != "h2: again,h4: again" {
		t.Errorf("retry: exit %d stdout %q stderr %s", r.code, got, r.stderr)
	}
	if b, _ := os.ReadFile(failed); len(b) != 0 {
		t.Errorf("failed file after success = %q, want empty", b)
	}
}

// warmHosts runs true on hosts so that their agent is cached: a test whose
// --timeout is short would otherwise also time the first upload.
func warmHosts(t *testing.T, hosts string) {
	t.Helper()
	if r := cli(t, "run", "-H", hosts, "--", "true"); r.code != 0 {
		t.Fatalf("run true on %s: exit %d: %s", hosts, r.code, r.stderr)
	}
}

func TestTimeout(t *testing.T) {
	warmHosts(t, "h[1-2]")
	start := time.Now()
	r := cli(t, "run", "-H", "h[1-2]", "--timeout", "1s", "--json", "--", hostIs(1)+" && sleep 30; echo quick")
	if r.code != ExitUnreachable {
		t.Errorf("exit %d, want %d", r.code, ExitUnreachable)
	}
	if time.Since(start) > 15*time.Second {
		t.Errorf("took %v", time.Since(start))
	}
	recs := finalRecords(t, r.stdout)
	if recs["h1"].Status != statusTimeout || recs["h2"].Status != statusOK {
		t.Errorf("records: %+v", recs)
	}
}

// TestTimeoutKillsPlainCommand: a command line of plain words runs without
// a shell (the agent starts the program itself); past --timeout it is
// killed all the same, and the host reports the timeout.
func TestTimeoutKillsPlainCommand(t *testing.T) {
	const arg = "31.4159" // a duration no other sleep on this machine uses
	warmHosts(t, "h1")
	r := cli(t, "run", "-H", "h1", "--timeout", "1s", "--json", "--", "sleep "+arg)
	if r.code != ExitUnreachable {
		t.Errorf("exit %d, want %d: %s", r.code, ExitUnreachable, r.stderr)
	}
	if recs := finalRecords(t, r.stdout); recs["h1"].Status != statusTimeout {
		t.Errorf("records: %+v", recs)
	}
	var left []int
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		left = processesRunning("sleep\x00" + arg + "\x00")
		if len(left) == 0 {
			return
		}
	}
	t.Errorf("sleep %s still running after its timeout: pids %v", arg, left)
}

// processesRunning lists the live processes whose command line is cmdline
// (arguments separated and ended by NUL bytes).
func processesRunning(cmdline string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline"); err == nil && string(b) == cmdline && processAlive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func TestGroupOutput(t *testing.T) {
	r := cli(t, "run", "-b", "-H", "h[1-4]", "--", "echo same; "+hostIs(3)+" && echo odd; echo warn >&2")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	want := "---------------\nh[1-2,4] (3)\n---------------\nsame\n" +
		"---------------\nh3 (1)\n---------------\nsame\nodd\n"
	if r.stdout != want {
		t.Errorf("grouped stdout:\n%s\nwant:\n%s", r.stdout, want)
	}
	if !strings.Contains(r.stderr, "---------------\nh[1-4] (4)\n---------------\nwarn\n") {
		t.Errorf("grouped stderr:\n%s", r.stderr)
	}
}

// record is a final --json record.
type record struct {
	Host       string          `json:"host"`
	Status     string          `json:"status"`
	ExitCode   *int            `json:"exit_code"`
	DurationMS *int64          `json:"duration_ms"`
	Error      *string         `json:"error"`
	Result     json.RawMessage `json:"result"`
	Files      *int            `json:"files"`
	Bytes      *int64          `json:"bytes"`
}

// finalRecords parses --json output: every line must be JSON, and each host
// must have exactly one final record.
func finalRecords(t *testing.T, out string) map[string]record {
	t.Helper()
	recs := map[string]record{}
	for _, l := range lines(out) {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not JSON: %q: %v", l, err)
		}
		if _, ok := m["status"]; !ok {
			continue
		}
		var r record
		json.Unmarshal([]byte(l), &r)
		if _, dup := recs[r.Host]; dup {
			t.Errorf("two records for %s", r.Host)
		}
		if r.DurationMS == nil || r.Error == nil {
			t.Errorf("record lacks duration_ms or error: %s", l)
		}
		recs[r.Host] = r
	}
	return recs
}

func TestJSONOutput(t *testing.T) {
	r := cli(t, "run", "--json", "-H", "h[1-3]", "--", "echo out; echo err >&2; "+hostIs(2)+" && exit 4; true")
	if r.code != ExitFailed {
		t.Errorf("exit %d, want 1", r.code)
	}
	type line struct{ Host, Stream, Line string }
	var got []string
	for _, l := range lines(r.stdout) {
		var ln line
		if err := json.Unmarshal([]byte(l), &ln); err != nil {
			t.Fatalf("not JSON: %q", l)
		}
		if ln.Stream != "" {
			got = append(got, ln.Host+" "+ln.Stream+" "+ln.Line)
		}
	}
	for _, h := range []string{"h1", "h2", "h3"} {
		for _, want := range []string{h + " stdout out", h + " stderr err"} {
			if !strings.Contains(strings.Join(got, "\n")+"\n", want+"\n") {
				t.Errorf("no line %q in %q", want, got)
			}
		}
	}
	recs := finalRecords(t, r.stdout)
	if len(recs) != 3 {
		t.Fatalf("%d records, want 3", len(recs))
	}
	for h, rec := range recs {
		wantCode, wantStatus := 0, statusOK
		if h == "h2" {
			wantCode, wantStatus = 4, statusFailed
		}
		if rec.Status != wantStatus || rec.ExitCode == nil || *rec.ExitCode != wantCode {
			t.Errorf("%s: %+v", h, rec)
		}
		if h == "h2" && *rec.Error != "exit status 4" {
			t.Errorf("h2 error = %q", *rec.Error)
		}
	}
	// Unreachable hosts have a record too, with a null exit code.
	r = cli(t, "run", "--json", "-H", "h1", "-p", "1", "-t", "5s", "--", "true")
	recs = finalRecords(t, r.stdout)
	if rec := recs["h1"]; r.code != ExitUnreachable || rec.Status != statusUnreachable || rec.ExitCode != nil || *rec.Error == "" {
		t.Errorf("unreachable: exit %d %+v", r.code, rec)
	}
	if strings.Contains(r.stdout, "\r") {
		t.Errorf("progress line in --json output")
	}
}

func TestBatchAndMaxFail(t *testing.T) {
	// Batches of 2: the second batch starts after the first has ended.
	r := cli(t, "run", "--batch", "2", "-H", "h[1-4]", "--json", "--", "date +%s%N; sleep 0.3; date +%s%N")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	times := map[string][]int64{}
	for _, l := range lines(r.stdout) {
		var ln struct{ Host, Stream, Line string }
		json.Unmarshal([]byte(l), &ln)
		if ln.Stream == "stdout" {
			n, _ := strconv.ParseInt(ln.Line, 10, 64)
			times[ln.Host] = append(times[ln.Host], n)
		}
	}
	end1 := max(times["h1"][1], times["h2"][1])
	start2 := min(times["h3"][0], times["h4"][0])
	if start2 < end1 {
		t.Errorf("second batch started %v before the first ended", time.Duration(end1-start2))
	}

	// --max-fail 1 with batches of 1: h1 ok, h2 fails, h3 and h4 never start.
	dir := t.TempDir()
	failed := filepath.Join(dir, "failed")
	r = cli(t, "run", "--batch", "1", "--max-fail", "1", "--failed-file", failed, "-H", "h[1-4]", "--", hostIs(2)+" && exit 1; echo ran")
	if r.code != ExitFailed {
		t.Errorf("exit %d, want 1", r.code)
	}
	if got := strings.Join(sortedLines(r.stdout), ","); got != "h1: ran" {
		t.Errorf("stdout %q, want only h1", got)
	}
	if !strings.Contains(r.stderr, "--max-fail 1 reached") || !strings.Contains(r.stderr, "2 not started") {
		t.Errorf("summary does not say it stopped:\n%s", r.stderr)
	}
	if b, _ := os.ReadFile(failed); string(b) != "h2\nh3\nh4\n" {
		t.Errorf("failed file %q", b)
	}
	// 50% of 4 hosts is 2 failures: h1 and h2 fail, h3 and h4 are not started.
	r = cli(t, "run", "--batch", "1", "--max-fail", "50%", "-H", "h[1-4]", "--", "("+hostIs(1)+" || "+hostIs(2)+") && exit 1; echo ran")
	if r.stdout != "" || !strings.Contains(r.stderr, "2 failed, 2 not started") {
		t.Errorf("50%%: stdout %q stderr:\n%s", r.stdout, r.stderr)
	}
	// --fanout 1 without batches runs hosts one after another too.
	r = cli(t, "run", "--fanout", "1", "-H", "h[1-3]", "--", "echo x")
	if r.code != 0 || len(lines(r.stdout)) != 3 {
		t.Errorf("fanout 1: exit %d stdout %q", r.code, r.stdout)
	}
}

func TestInterruptKillsRemoteProcesses(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb lockedBuf
	done := make(chan result, 1)
	go func() {
		done <- cliTo(t, ctx, nil, &out, &errb, "run", "-H", "h[1-2]", "--", "echo $$; exec sleep 300")
	}()
	pids := map[string]int{}
	deadline := time.Now().Add(20 * time.Second)
	for len(pids) < 2 && time.Now().Before(deadline) {
		for _, l := range lines(out.String()) {
			h, p, ok := strings.Cut(l, ": ")
			if n, err := strconv.Atoi(p); ok && err == nil {
				pids[h] = n
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(pids) < 2 {
		cancel()
		t.Fatalf("no pids printed: %q %q", out.String(), errb.String())
	}
	for h, pid := range pids {
		if !processAlive(pid) {
			t.Fatalf("%s: sleep %d not running", h, pid)
		}
	}
	cancel()
	var r result
	select {
	case r = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if r.code != ExitInterrupted {
		t.Errorf("exit %d, want %d", r.code, ExitInterrupted)
	}
	if !strings.Contains(r.stderr, "interrupted") || !strings.Contains(r.stderr, "2 cancelled") {
		t.Errorf("summary:\n%s", r.stderr)
	}
	for h, pid := range pids {
		gone := false
		for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
			if !processAlive(pid) {
				gone = true
				break
			}
		}
		if !gone {
			t.Errorf("%s: sleep 300 (pid %d) still running after the interrupt", h, pid)
		}
	}
}

func TestHostsCommand(t *testing.T) {
	r := cli(t, "hosts", "web[1-3],db1", "-x", "web2")
	if r.code != 0 || r.stdout != "web1\nweb3\ndb1\n" {
		t.Errorf("hosts: %d %q", r.code, r.stdout)
	}
	r = cli(t, "hosts", "-c", "web1", "web2", "web3", "web7")
	if r.stdout != "web[1-3,7]\n" {
		t.Errorf("hosts -c: %q", r.stdout)
	}
	r = cli(t, "hosts", "-n", "-H", "rack[1-4]-node[01-32]", "-x", "rack2-*")
	if r.stdout != "96\n" {
		t.Errorf("hosts -n: %q", r.stdout)
	}
	r = cli(t, "hosts", "web[3-1]")
	if r.code != ExitUsage || !strings.Contains(r.stderr, "web[3-1]\n") || !strings.Contains(r.stderr, "^") {
		t.Errorf("bad expression: %d %q", r.code, r.stderr)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"run", "--", "true"},               // no hosts
		{"run", "-H", "h1"},                 // no command
		{"nosuch"},                          // no such command
		{"run", "-H", "h1", "--bogus", "x"}, // unknown flag
		{"call", "-H", "h1"},                // no function
		{"call", "-H", "h1", "f", "{bad"},   // bad JSON
		{"put", "-H", "h1", "/nonexistent/x", "/tmp"},
		{"run", "-H", "h1", "--max-fail", "x", "--", "true"},
		{"run", "-H", "h1", "-b", "--json", "--", "true"},
	} {
		r := cli(t, args...)
		if r.code != ExitUsage || r.stderr == "" {
			t.Errorf("%q: exit %d stderr %q, want usage error", args, r.code, r.stderr)
		}
	}
	r := cli(t, "run", "--help")
	if r.code != 0 || !strings.Contains(r.stdout, "Examples:") || !strings.Contains(r.stdout, "--max-fail") {
		t.Errorf("run --help: %d %q", r.code, r.stdout)
	}
	for _, c := range commands {
		if r := cli(t, c.name, "-h"); r.code != 0 || !strings.Contains(r.stdout, "Usage: toworker "+c.name) {
			t.Errorf("%s -h: %d %q", c.name, r.code, r.stdout)
		}
	}
	r = cli(t, "version")
	if r.code != 0 || !strings.Contains(r.stdout, "commit ") || !strings.Contains(r.stdout, "go1") {
		t.Errorf("version: %q", r.stdout)
	}
}

// --become runs the command as another user through sudo -n; the lab logs
// in as root, whom sudo lets become anyone without a password.
func TestRunBecome(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a throwaway user")
	}
	if err := sshdtest.EnsureUser("twbecome", "/bin/sh"); err != nil {
		t.Fatal(err)
	}
	r := cli(t, "run", "--become", "twbecome", "-H", "h1", "--", "id -un")
	if r.code != ExitOK || !has(r.stdout, "h1: twbecome") {
		t.Fatalf("--become: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

// readWatcher is a stdin that records whether anything read it.
type readWatcher struct{ read atomic.Bool }

func (r *readWatcher) Read(p []byte) (int, error) {
	r.read.Store(true)
	return 0, io.EOF
}

// zeros is an endless stdin of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// run --stdin reads stdin once and gives all of it to the command on every
// host (a local script run with sh -s, as with clush or pssh -I); a command
// that reads none of it still succeeds. Without --stdin, stdin is not read
// and commands get an empty input, as under pdsh.
func TestRunStdin(t *testing.T) {
	in := "echo from-script $((1+2))\necho second line\n"
	r := cliCtx(t, context.Background(), strings.NewReader(in), "run", "--stdin", "-H", "h[1-3]", "--", "sh", "-s")
	want := []string{"h1: from-script 3", "h1: second line", "h2: from-script 3", "h2: second line", "h3: from-script 3", "h3: second line"}
	if got := sortedLines(r.stdout); r.code != ExitOK || !slices.Equal(got, want) {
		t.Errorf("--stdin -- sh -s: exit %d, stdout %q, want %q; stderr:\n%s", r.code, got, want, r.stderr)
	}
	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
	r = cliCtx(t, context.Background(), strings.NewReader(big), "run", "--stdin", "-H", "h1", "--", "wc -c; true")
	if r.code != ExitOK || strings.TrimSpace(strings.TrimPrefix(r.stdout, "h1: ")) != strconv.Itoa(len(big)) {
		t.Errorf("--stdin of 1 MiB: exit %d, stdout %q", r.code, r.stdout)
	}
	r = cliCtx(t, context.Background(), strings.NewReader(big), "run", "--stdin", "-H", "h[1-2]", "--", "echo not reading")
	if r.code != ExitOK || len(lines(r.stdout)) != 2 {
		t.Errorf("--stdin to a command that does not read it: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	var w readWatcher
	r = cliCtx(t, context.Background(), &w, "run", "-H", "h1", "--", "cat; echo end")
	if r.code != ExitOK || r.stdout != "h1: end\n" || w.read.Load() {
		t.Errorf("without --stdin: exit %d, stdout %q, stdin read: %v", r.code, r.stdout, w.read.Load())
	}

	r = cliCtx(t, context.Background(), strings.NewReader("h1\n"), "run", "--stdin", "-H", "-", "--", "cat")
	if r.code != ExitUsage || !strings.Contains(r.stderr, "--stdin and -H - both read stdin") {
		t.Errorf("--stdin with -H -: exit %d, stderr %q", r.code, r.stderr)
	}
	r = cliCtx(t, context.Background(), io.LimitReader(zeros{}, maxStdin+1), "run", "--stdin", "-H", "h1", "--", "cat")
	if r.code != ExitUsage || !strings.Contains(r.stderr, "more than 64 MiB") {
		t.Errorf("--stdin of more than 64 MiB: exit %d, stderr %q", r.code, r.stderr)
	}
}
