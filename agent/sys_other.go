//go:build !linux

package agent

import (
	"os"
	"syscall"
)

// workerSysProcAttr puts each worker in a process group of its own.
func workerSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// waitNoReap is not available here; the reaper kills the group right after
// the worker is reaped.
func waitNoReap(pid int) {}

// cloexecSocketpair makes a Unix stream socket pair, closed on exec. Where
// socketpair has no SOCK_CLOEXEC (macOS), the flag is set under
// syscall.ForkLock, so that no process started meanwhile inherits them.
func cloexecSocketpair() ([2]int, error) {
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		return fds, err
	}
	syscall.CloseOnExec(fds[0])
	syscall.CloseOnExec(fds[1])
	return fds, nil
}

// sharedMemFile returns an unlinked temporary file.
func sharedMemFile(name string) (*os.File, error) {
	f, err := os.CreateTemp("", name+"-*")
	if err != nil {
		return nil, err
	}
	os.Remove(f.Name())
	return f, nil
}

// runningExe is what the boss executes to start a worker: its own path.
// Here a worker cannot start once that file is removed from the agent
// cache (see the Linux version).
func runningExe(exe string) string { return exe }

// nameWorker is needed only where workers start through /proc/self/exe.
func nameWorker() {}
