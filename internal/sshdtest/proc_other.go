//go:build !linux

package sshdtest

import (
	"errors"
	"syscall"
)

// This package runs sshd on Linux only; these stubs keep it compiling
// elsewhere (StartLab fails and NewLab skips there).

type sig int

const (
	sigStop sig = iota
	sigCont
	sigTerm
	sigKill
)

type proc struct{ pid int }

func sysProcAttr() *syscall.SysProcAttr { return nil }

func signalGroup(int, sig) error { return errors.New("sshdtest: needs linux") }

func exited(int) bool { return true }

func connectionHandlers(int) []proc { return nil }

func countConnectionHandlers(map[int]bool) int { return 0 }

func (proc) alive() bool { return false }

func allGone([]proc) bool { return true }

type procStat struct {
	state           byte
	ppid, pgid, sid int
	start           uint64
}

func readStat(int) (procStat, error) { return procStat{}, errors.New("sshdtest: needs linux") }
