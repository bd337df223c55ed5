package agent

import (
	"os"
	"path/filepath"
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

// nameWorker gives a worker started through /proc/self/exe (whose name the
// kernel then makes "exe") the name of its binary back, as top, pgrep and
// ps -o comm show it: the first 15 bytes of argv[0]'s base name, as the
// kernel would have.
func nameWorker() {
	name := filepath.Base(os.Args[0])
	if len(name) > 15 {
		name = name[:15]
	}
	os.WriteFile("/proc/self/comm", []byte(name), 0)
}
