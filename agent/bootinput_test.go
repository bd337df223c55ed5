package agent

import (
	"bufio"
	"io"
	"strconv"
	"strings"
	"testing"

	"github.com/toworker/toworker/internal/wire"
)

func TestMasterInput(t *testing.T) {
	v := wire.MasterPreamble + " " + strconv.Itoa(wire.Version) + " "
	tests := []struct {
		name  string
		in    string
		skip  bool
		want  string // what reads after the preamble give
		error string // substring of the error, if any
	}{
		{"frames follow", v + "5\nabcdeREST", false, "abcdeREST", ""},
		{"copy of the frames skipped", v + "5\nabcdeREST", true, "REST", ""},
		{"nothing at all", "", false, "", ""},
		{"another version", wire.MasterPreamble + " 999 5\nabcde", false, "", "master protocol 999"},
		{"not a preamble", "hello there\n", false, "", "preamble is"},
		{"negative count", v + "-1\n", false, "", "announces"},
		{"count too large", v + "99999999999\n", false, "", "announces"},
		{"skip past the end", v + "5\nab", true, "", "skip"},
		{"no newline", v + "5", false, "", "preamble"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &masterInput{in: bufio.NewReader(strings.NewReader(tt.in)), skip: tt.skip}
			got, err := io.ReadAll(m)
			if tt.error == "" {
				if err != nil || string(got) != tt.want {
					t.Fatalf("read %q, %v; want %q", got, err, tt.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.error) {
				t.Fatalf("error %v, want one mentioning %q", err, tt.error)
			}
		})
	}
}

func FuzzParsePreamble(f *testing.F) {
	f.Add(wire.MasterPreamble + " 2 100\n")
	f.Add("toworker-master 2 -5")
	f.Fuzz(func(t *testing.T, line string) {
		n, err := parsePreamble(line)
		if err == nil && (n < 0 || n > wire.MaxFrame+2*wire.HeaderLen) {
			t.Fatalf("accepted %q with a count of %d", line, n)
		}
	})
}
