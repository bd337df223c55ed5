package agent

import (
	"slices"
	"strings"
	"testing"
)

func TestPlainArgv(t *testing.T) {
	tests := []struct {
		line string
		want []string // nil: left to /bin/sh
	}{
		{"uptime", []string{"uptime"}},
		{"systemctl is-active nginx", []string{"systemctl", "is-active", "nginx"}},
		{"  df\t-h  /var ", []string{"df", "-h", "/var"}},
		{"/usr/bin/env FOO=1 x", []string{"/usr/bin/env", "FOO=1", "x"}},
		{"dd if=/dev/zero of=/dev/null bs=1M count=1", []string{"dd", "if=/dev/zero", "of=/dev/null", "bs=1M", "count=1"}},
		{"ls -l a,b user@host:/x 50% +1", []string{"ls", "-l", "a,b", "user@host:/x", "50%", "+1"}},
		{"", nil},
		{"   ", nil},
		{"FOO=1 env", nil},    // an assignment
		{"true", nil},         // builtins, which may differ from
		{"echo hi", nil},      // the program of the same name
		{"pwd", nil},          //
		{"cd /tmp", nil},      //
		{"exec uptime", nil},  //
		{"time ls", nil},      // a keyword
		{"if", nil},           //
		{"ls; uptime", nil},   // lists, pipes, redirections
		{"ls | wc", nil},      //
		{"ls >out", nil},      //
		{"ls &", nil},         //
		{"ls $HOME", nil},     // expansions
		{"ls ~", nil},         //
		{"ls *.go", nil},      //
		{"ls a?", nil},        //
		{"ls [ab]", nil},      //
		{"ls {a,b}", nil},     //
		{"ls `pwd`", nil},     //
		{"echo 'a b'", nil},   // quoting
		{`ls a\ b`, nil},      //
		{"ls \"a\"", nil},     //
		{"ls # comment", nil}, //
		{"ls\nuptime", nil},   // two commands
		{"ls !x", nil},        // history, negation
		{"ls é", nil},         // non-ASCII
		{"ls\x00x", nil},      //
		{"uptime\r", nil},     //
		{"ls (x)", nil},       //
		{"ls ^x", nil},        // a pipe to the Bourne shell
	}
	for _, tt := range tests {
		got, ok := plainArgv(tt.line)
		if ok != (tt.want != nil) || !slices.Equal(got, tt.want) {
			t.Errorf("plainArgv(%q) = %q, %v; want %q", tt.line, got, ok, tt.want)
		}
	}
}

func TestExitOnlyBuiltin(t *testing.T) {
	tests := []struct {
		line string
		code int
		ok   bool
	}{
		{"true", 0, true},
		{" true --help x", 0, true},
		{":", 0, true},
		{"false", 1, true},
		{"false\t-x", 1, true},
		{"", 0, false},
		{"truex", 0, false},
		{"true; false", 0, false},
		{"false || true", 0, false},
		{"true >/x", 0, false},
		{"true $(reboot)", 0, false},
		{"/bin/true", 0, false}, // a program, run as such
		{"X=1 true", 0, false},
	}
	for _, tt := range tests {
		code, ok := exitOnlyBuiltin(tt.line)
		if code != tt.code || ok != tt.ok {
			t.Errorf("exitOnlyBuiltin(%q) = %d, %v; want %d, %v", tt.line, code, ok, tt.code, tt.ok)
		}
	}
}

func FuzzPlainArgv(f *testing.F) {
	for _, s := range []string{"uptime", "ls -l /", "echo $x", "a=b c", "\t x \t", "true"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		argv, ok := plainArgv(line)
		if !ok {
			if argv != nil {
				t.Fatalf("plainArgv(%q) refused it but returned %q", line, argv)
			}
			return
		}
		if len(argv) == 0 || strings.Contains(argv[0], "=") || shellWord(argv[0]) {
			t.Fatalf("plainArgv(%q) = %q: not a program's name first", line, argv)
		}
		for _, w := range argv {
			if w == "" {
				t.Fatalf("plainArgv(%q) = %q: an empty word", line, argv)
			}
			for i := 0; i < len(w); i++ {
				if !plainByte(w[i]) {
					t.Fatalf("plainArgv(%q) = %q: byte %q means something to a shell", line, argv, w[i])
				}
			}
		}
		// Splitting loses only blanks.
		if strings.Join(argv, "") != strings.NewReplacer(" ", "", "\t", "").Replace(line) {
			t.Fatalf("plainArgv(%q) = %q lost or changed bytes", line, argv)
		}
	})
}
