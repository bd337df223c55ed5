package sshdial

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Resolutions share a parsed configuration (a fan-out parses it once), each
// deciding its own Host and Match blocks, and an edited file is read again
// at once.
func TestResolveSharesParsedConfig(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config")
	var b strings.Builder
	for i := range 20 {
		fmt.Fprintf(&b, "Host h%d\n  HostName 10.0.0.%d\n  Port %d\n", i, i, 2000+i)
	}
	b.WriteString("Match user nobody-here\n  Port 1\nHost *\n  User fleet\n")
	if err := os.WriteFile(cfg, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	o := Options{ConfigFile: cfg, HomeDir: dir}
	var wg sync.WaitGroup
	errs := make(chan error, 8*20)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				n := (i + g) % 20
				tg, err := Resolve(fmt.Sprintf("h%d", n), o)
				if err != nil {
					errs <- err
					return
				}
				if want := fmt.Sprintf("10.0.0.%d", n); tg.HostName != want || tg.Port != 2000+n || tg.User != "fleet" {
					errs <- fmt.Errorf("h%d resolved to %s@%s:%d, want fleet@%s:%d", n, tg.User, tg.HostName, tg.Port, want, 2000+n)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	// An edit shows at once, though the parse is still fresh.
	if err := os.WriteFile(cfg, []byte("Host h1\n  HostName 192.0.2.1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tg, err := Resolve("h1", o)
	if err != nil {
		t.Fatal(err)
	}
	if tg.HostName != "192.0.2.1" {
		t.Fatalf("after the edit h1 resolves to %s, want 192.0.2.1", tg.HostName)
	}
}
