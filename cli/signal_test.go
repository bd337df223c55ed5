package cli

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// mainProcess starts this test binary as the toworker command with args.
func mainProcess(t *testing.T, args ...string) (*exec.Cmd, *bufio.Scanner, *lockedBuf) {
	t.Helper()
	args = append([]string{args[0], "-F", lab.ConfigFile}, args[1:]...)
	cmd := exec.Command(os.Args[0])
	js, _ := json.Marshal(args)
	cmd.Env = append(os.Environ(), "TOWORKER_TEST_MAIN="+string(js))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errb lockedBuf
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd, bufio.NewScanner(out), &errb
}

// sleepPIDs reads "host: pid" lines until n have arrived.
func sleepPIDs(t *testing.T, sc *bufio.Scanner, n int) []int {
	t.Helper()
	var pids []int
	for len(pids) < n && sc.Scan() {
		_, p, _ := strings.Cut(sc.Text(), ": ")
		if pid, err := strconv.Atoi(p); err == nil {
			pids = append(pids, pid)
		}
	}
	if len(pids) < n {
		t.Fatalf("got pids %v, want %d", pids, n)
	}
	return pids
}

func waitGone(t *testing.T, pids []int) {
	t.Helper()
	for _, pid := range pids {
		deadline := time.Now().Add(5 * time.Second)
		for processAlive(pid) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if processAlive(pid) {
			t.Errorf("remote process %d still running", pid)
		}
	}
}

func exitCode(t *testing.T, cmd *exec.Cmd, within time.Duration) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
		return cmd.ProcessState.ExitCode()
	case <-time.After(within):
		t.Fatalf("still running %v after the signal", within)
		return -1
	}
}

func TestMainSignals(t *testing.T) {
	// Once: the jobs are cancelled on their hosts, the summary printed.
	cmd, sc, errb := mainProcess(t, "run", "-H", "h[1-2]", "--", "echo $$; exec sleep 300")
	pids := sleepPIDs(t, sc, 2)
	cmd.Process.Signal(syscall.SIGINT)
	if code := exitCode(t, cmd, 15*time.Second); code != ExitInterrupted {
		t.Errorf("exit %d, want %d; stderr:\n%s", code, ExitInterrupted, errb.String())
	}
	if !strings.Contains(errb.String(), "2 cancelled") {
		t.Errorf("no summary:\n%s", errb.String())
	}
	waitGone(t, pids)

	// Twice: out at once; the hosts' agents see the connection drop and
	// kill the jobs.
	cmd, sc, errb = mainProcess(t, "run", "-H", "h[1-2]", "--", "echo $$; trap '' INT TERM; exec sleep 300")
	pids = sleepPIDs(t, sc, 2)
	cmd.Process.Signal(syscall.SIGINT)
	cmd.Process.Signal(syscall.SIGINT)
	if code := exitCode(t, cmd, 5*time.Second); code != ExitInterrupted {
		t.Errorf("exit %d, want %d; stderr:\n%s", code, ExitInterrupted, errb.String())
	}
	waitGone(t, pids)
}
