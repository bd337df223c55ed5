//go:build unix

package sshdial

import (
	"os/exec"
	"syscall"
)

// ownGroup starts cmd in a process group of its own and has its context's
// end kill the whole group: a Match exec command's own children too.
func ownGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
}
