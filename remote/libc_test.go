package remote

import (
	"errors"
	"strings"
	"testing"
)

func TestLibcHint(t *testing.T) {
	tests := []struct {
		err  error
		hint bool
	}{
		{nil, false},
		{errors.New("wait for agent: the bootstrap exited with status 1 (host stderr: /home/u/.cache/toworker/ab: /lib/x86_64-linux-gnu/libc.so.6: version `GLIBC_2.34' not found)"), true},
		{errors.New("wait for agent: the bootstrap exited with status 127 (host stderr: sh: /home/u/.cache/toworker/ab: not found; Error loading shared library ld-linux-x86-64.so.2)"), true},
		{errors.New("wait for agent: the session ended before the agent started"), false},
	}
	for _, tt := range tests {
		got := libcHint(tt.err)
		if tt.err == nil {
			if got != nil {
				t.Errorf("libcHint(nil) = %v", got)
			}
			continue
		}
		if !errors.Is(got, tt.err) {
			t.Errorf("libcHint(%v) does not wrap it", tt.err)
		}
		if has := strings.Contains(got.Error(), "CGO_ENABLED=0"); has != tt.hint {
			t.Errorf("libcHint(%q): hint %v, want %v", tt.err, has, tt.hint)
		}
	}
}
