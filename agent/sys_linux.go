package agent

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// workerSysProcAttr puts each worker in a process group of its own (so that
// killing the group kills every process the job started) and has the kernel
// signal it if the boss dies without cleaning up.
func workerSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}

// waitNoReap waits for pid to exit without reaping it.
func waitNoReap(pid int) {
	var info unix.Siginfo
	for unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil) == unix.EINTR {
	}
}

// cloexecSocketpair makes a Unix stream socket pair, closed on exec.
func cloexecSocketpair() ([2]int, error) {
	return unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
}

// sharedMemFile returns an anonymous file in memory, closed on exec.
func sharedMemFile(name string) (*os.File, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), name), nil
}

// runningExe is what the boss executes to start a worker: /proc/self/exe,
// the very binary the boss runs, even once its file in the agent cache is
// removed (a master uploading a newer agent prunes the cache down to
// AgentOptions.KeepVersions) or replaced. Where /proc is not mounted, the
// path exe.
func runningExe(exe string) string {
	if _, err := os.Stat("/proc/self/exe"); err == nil {
		return "/proc/self/exe"
	}
	return exe
}
