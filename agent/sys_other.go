//go:build !linux

package agent

import "syscall"

// workerSysProcAttr puts each worker in a process group of its own.
func workerSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// waitNoReap is not available here; the reaper kills the group right after
// the worker is reaped.
func waitNoReap(pid int) {}
