//go:build linux || darwin || freebsd

package remote

import (
	"fmt"
	"os"
	"syscall"
)

// fileIdentity names the file that fi describes as it is now: device,
// inode, size, and modification and change times. Any write, rename over
// it or chmod changes it, and the change time cannot be set back.
func fileIdentity(fi os.FileInfo) (string, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return "", false
	}
	m, c := statTimes(st)
	return fmt.Sprintf("%d:%d:%d:%d.%09d:%d.%09d", st.Dev, st.Ino, st.Size, m.Sec, m.Nsec, c.Sec, c.Nsec), true
}
