package cli

import (
	"crypto/sha256"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// node is a file, directory or link of a test tree.
type node struct {
	path string // slash-separated, relative to the tree's parent
	mode os.FileMode
	size int64  // regular files
	link string // symlinks
}

// makeTree creates nodes under dir with distinct past modification times.
func makeTree(t *testing.T, dir string, nodes []node) {
	t.Helper()
	rng := rand.NewChaCha8([32]byte{1})
	base := time.Date(2020, 1, 2, 3, 4, 5, 123456789, time.UTC)
	var dirs []node
	for _, n := range nodes {
		p := filepath.Join(dir, filepath.FromSlash(n.path))
		switch {
		case n.mode.IsDir():
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			dirs = append(dirs, n)
		case n.mode&os.ModeSymlink != 0:
			if err := os.Symlink(n.link, p); err != nil {
				t.Fatal(err)
			}
		default:
			f, err := os.Create(p)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.CopyN(f, rng, n.size); err != nil {
				t.Fatal(err)
			}
			f.Close()
			os.Chmod(p, n.mode)
		}
	}
	for i, n := range nodes {
		p := filepath.Join(dir, filepath.FromSlash(n.path))
		if n.mode&os.ModeSymlink == 0 && !n.mode.IsDir() {
			mt := base.Add(time.Duration(i) * time.Hour)
			os.Chtimes(p, mt, mt)
		}
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		p := filepath.Join(dir, filepath.FromSlash(dirs[i].path))
		os.Chmod(p, dirs[i].mode.Perm())
		mt := base.Add(-time.Duration(i+1) * time.Hour)
		os.Chtimes(p, mt, mt)
	}
}

// sameTree checks that the nodes under got match those under want: type,
// mode, modification time, contents (SHA-256), link targets; skip lists
// nodes that must be absent from got.
func sameTree(t *testing.T, want, got string, nodes []node, skip map[string]bool) {
	t.Helper()
	for _, n := range nodes {
		wp := filepath.Join(want, filepath.FromSlash(n.path))
		gp := filepath.Join(got, filepath.FromSlash(n.path))
		gi, err := os.Lstat(gp)
		if skip[n.path] {
			if err == nil {
				t.Errorf("%s: should not have been copied", gp)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", n.path, err)
			continue
		}
		wi, _ := os.Lstat(wp)
		if gi.Mode() != wi.Mode() {
			t.Errorf("%s: mode %v, want %v", n.path, gi.Mode(), wi.Mode())
		}
		if gi.Mode()&os.ModeSymlink != 0 {
			gl, _ := os.Readlink(gp)
			if gl != n.link {
				t.Errorf("%s: link to %q, want %q", n.path, gl, n.link)
			}
			continue
		}
		if !gi.ModTime().Equal(wi.ModTime()) {
			t.Errorf("%s: mtime %v, want %v", n.path, gi.ModTime(), wi.ModTime())
		}
		if gi.Mode().IsRegular() {
			if gi.Size() != wi.Size() {
				t.Errorf("%s: size %d, want %d", n.path, gi.Size(), wi.Size())
			} else if hashFile(t, gp) != hashFile(t, wp) {
				t.Errorf("%s: contents differ", n.path)
			}
		}
	}
	// No temporary file left behind.
	filepath.WalkDir(got, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.Contains(d.Name(), ".toworker-") {
			t.Errorf("temporary file left: %s", p)
		}
		return nil
	})
}

func hashFile(t *testing.T, p string) [32]byte {
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, f)
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

func TestPutGetTree(t *testing.T) {
	src := t.TempDir()
	tree := []node{
		{path: "tree", mode: os.ModeDir | 0o750},
		{path: "tree/small.txt", mode: 0o640, size: 5},
		{path: "tree/exec.sh", mode: 0o755, size: 100},
		{path: "tree/empty", mode: 0o600},
		{path: "tree/inline-max", mode: 0o644, size: 64 << 10},
		{path: "tree/sub", mode: os.ModeDir | 0o700},
		{path: "tree/sub/big.bin", mode: 0o644, size: 64<<20 + 12345},
		{path: "tree/sub/deep", mode: os.ModeDir | 0o755},
		{path: "tree/sub/deep/mid.bin", mode: 0o600, size: 3<<20 + 1},
		{path: "tree/sub/deep/ro", mode: os.ModeDir | 0o555},
		{path: "tree/emptydir", mode: os.ModeDir | 0o711},
		{path: "tree/link", mode: os.ModeSymlink, link: "sub/big.bin"},
		{path: "tree/uplink", mode: os.ModeSymlink, link: "../single.txt"},
		{path: "tree/abslink", mode: os.ModeSymlink, link: "/etc/hostname"},
		{path: "single.txt", mode: 0o604, size: 1000},
	}
	makeTree(t, src, tree)

	// put: a tree and a single file into a directory that does not exist.
	remote := filepath.Join(t.TempDir(), "remote", "dir")
	start := time.Now()
	r := cli(t, "put", "-H", "h1", filepath.Join(src, "tree"), filepath.Join(src, "single.txt"), remote)
	t.Logf("put of %d MiB: %v", 64+3, time.Since(start))
	if r.code != 0 {
		t.Fatalf("put: exit %d\n%s", r.code, r.stderr)
	}
	sameTree(t, src, remote, tree, nil)

	// get: from two hosts into LOCAL_DIR/<host>/. Links whose target would
	// leave LOCAL_DIR/<host> are skipped with a warning; tree/uplink points
	// to single.txt, copied beside tree.
	local := filepath.Join(t.TempDir(), "local")
	start = time.Now()
	r = cli(t, "get", "--json", "-H", "h[1-2]", filepath.Join(remote, "tree"), filepath.Join(remote, "single.txt"), local)
	t.Logf("get of 2 × %d MiB: %v", 64+3, time.Since(start))
	if r.code != 0 {
		t.Fatalf("get: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	recs := finalRecords(t, r.stdout)
	for _, h := range []string{"h1", "h2"} {
		sameTree(t, remote, filepath.Join(local, h), tree, map[string]bool{"tree/abslink": true})
		if rec := recs[h]; rec.Files == nil || *rec.Files != 7 || rec.Bytes == nil || *rec.Bytes < 67<<20 {
			t.Errorf("%s record: %+v", h, rec)
		}
		for _, l := range []string{"tree/abslink"} {
			if !strings.Contains(r.stdout, `"host":"`+h+`","stream":"stderr","line":"toworker: get: skipping symbolic link `+l) {
				t.Errorf("no warning about %s from %s:\n%s", l, h, r.stdout)
			}
		}
	}

	// Relative paths are relative to -C.
	r = cli(t, "put", "-H", "h1", "-C", remote, filepath.Join(src, "single.txt"), "again/here")
	if r.code != 0 {
		t.Fatalf("put -C: exit %d %s", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(remote, "again/here/single.txt")); err != nil {
		t.Error(err)
	}
	r = cli(t, "get", "-H", "h1", "-C", remote, "again", local)
	if _, err := os.Stat(filepath.Join(local, "h1/again/here/single.txt")); r.code != 0 || err != nil {
		t.Errorf("get -C: exit %d %v %s", r.code, err, r.stderr)
	}

	// A missing remote file fails that host.
	r = cli(t, "get", "-H", "h1", "/no/such/file", local)
	if r.code != ExitFailed || !strings.Contains(r.stderr, "no such file") {
		t.Errorf("missing remote file: exit %d %s", r.code, r.stderr)
	}
}

func TestGetRefusesEscapes(t *testing.T) {
	old := getFunc
	getFunc = "test.hostileget"
	t.Cleanup(func() { getFunc = old })

	base := t.TempDir()
	local := filepath.Join(base, "in", "out")
	before := listAll(t, base)
	_, etcErr := os.Lstat("/etc/x")
	r := cli(t, "get", "-H", "h1", "anything", local)
	if r.code != ExitFailed || !strings.Contains(r.stderr, "refused") {
		t.Errorf("exit %d, want %d; stderr:\n%s", r.code, ExitFailed, r.stderr)
	}
	// Nothing outside LOCAL_DIR/h1.
	hostDir := filepath.Join(local, "h1")
	for p := range listAll(t, base) {
		if !before[p] && p != filepath.Join(base, "in") && p != local && p != hostDir && !strings.HasPrefix(p, hostDir+"/") {
			t.Errorf("created outside %s: %s", hostDir, p)
		}
	}
	if _, err := os.Lstat("/etc/x"); err == nil && etcErr != nil {
		t.Errorf("/etc/x was created")
	}
	if _, err := os.Lstat("/tmp/abs-x"); err == nil {
		t.Errorf("/tmp/abs-x was created")
	}
	for _, want := range []string{
		`refused: unsafe path "../../etc/x"`, `refused: unsafe path "/tmp/abs-x"`,
		`refused: unsafe path "ok/../../x"`, `refused: unsafe path "a/./b"`, `refused: unsafe path ""`,
		`skipping symbolic link tree/out -> ../../outside`, `skipping symbolic link tree/abs -> /etc/passwd`,
		`skipping symbolic link tree/sneaky -> sub/../../..`, `skipping symbolic link tree/evil -> ../..`,
		`refused: "tree/dot/through" goes through the symbolic link "tree/dot"`,
		`refused: "tree/dev" is a`,
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q", want)
		}
	}
	if !strings.Contains(r.stdout, "write to a bad handle: callback toworker.get.write: no open file 7") {
		t.Errorf("bad handle accepted? stdout:\n%s", r.stdout)
	}
	// What was safe is there.
	if b, err := os.ReadFile(filepath.Join(hostDir, "tree/good.txt")); err != nil || string(b) != "good" {
		t.Errorf("good.txt: %q %v", b, err)
	}
	for l, target := range map[string]string{"tree/inlink": "good.txt", "tree/up": "../tree/good.txt", "tree/dot": "."} {
		if got, err := os.Readlink(filepath.Join(hostDir, l)); err != nil || got != target {
			t.Errorf("%s -> %q (%v), want %q", l, got, err, target)
		}
	}
	if fi, err := os.Stat(filepath.Join(hostDir, "tree/setuid")); err != nil || fi.Mode() != 0o755 {
		t.Errorf("setuid file: %v %v, want mode 0755 without set-id", fi.Mode(), err)
	}
	if _, err := os.Lstat(filepath.Join(hostDir, "tree/through")); err == nil {
		t.Errorf("a file was written through a symbolic link")
	}
}

// listAll lists every path under dir.
func listAll(t *testing.T, dir string) map[string]bool {
	m := map[string]bool{}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil {
			m[p] = true
		}
		return nil
	})
	return m
}
