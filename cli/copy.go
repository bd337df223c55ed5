package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/toworker/toworker/agent"
	"github.com/toworker/toworker/remote"
)

// Limits of the master side of put and get.
const (
	maxReadLen      = 4 << 20 // largest chunk a host may ask for in put
	pageInlineBytes = 1 << 20 // inline file data in one page of put's list
	pageEntries     = 1000    // entries in one page of put's list
	chunkBuffers    = 32      // put: chunks being read at once, all hosts together
	maxOpenPerHost  = 16      // get: large files being received at once from one host
	maxGetFileSize  = 1 << 50 // get: sanity bound on a declared file size
	getDirMode      = 0o755   // get: mode of LOCAL_DIR and LOCAL_DIR/<host>
	getKeepMode     = 0o777   // get: mode bits kept (no setuid, setgid or sticky from a host)
	putKeepMode     = 0o7777  // put: mode bits kept
	warnPrefix      = "toworker: "
	hostDirReplacer = "_"
)

// getFunc and putFunc name the functions put and get run; tests replace
// getFunc with a hostile one.
var (
	getFunc = agent.GetFiles.Name()
	putFunc = agent.PutFiles.Name()
)

// ---- put ----

// putTask copies local files and trees to a directory on every host.
type putTask struct {
	dest    string
	chdir   string
	entries []agent.FileEntry // static after buildPut
	local   []string          // the local path of each entry
	sem     chan struct{}
}

// buildPut walks the local sources. Symbolic links named on the command
// line are followed; links inside a tree are copied as links. Special
// files are left out with a warning.
func buildPut(srcs []string, warn func(string, ...any)) (*putTask, error) {
	t := &putTask{sem: make(chan struct{}, chunkBuffers)}
	seen := map[string]string{}
	for _, src := range srcs {
		abs, err := filepath.Abs(src)
		if err != nil {
			return nil, usagef("%s: %v", src, err)
		}
		base := filepath.Base(abs)
		if base == string(filepath.Separator) {
			return nil, usagef("%s: cannot copy the root directory; name what is below it", src)
		}
		if prev, dup := seen[base]; dup {
			return nil, usagef("%s and %s would both be copied to %s", prev, src, base)
		}
		seen[base] = src
		fi, err := os.Stat(abs)
		if err != nil {
			return nil, usagef("%v", err)
		}
		if !fi.IsDir() {
			if err := t.add(abs, base, fi, warn); err != nil {
				return nil, err
			}
			continue
		}
		real, err := filepath.EvalSymlinks(abs)
		if err != nil {
			return nil, usagef("%v", err)
		}
		err = filepath.WalkDir(real, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return usagef("%v", err)
			}
			rel, err := filepath.Rel(real, p)
			if err != nil {
				return err
			}
			name := base
			if rel != "." {
				name = base + "/" + filepath.ToSlash(rel)
			}
			fi, err := d.Info()
			if err != nil {
				return usagef("%v", err)
			}
			return t.add(p, name, fi, warn)
		})
		if err != nil {
			return nil, err
		}
	}
	return t, nil
}

func (t *putTask) add(p, name string, fi fs.FileInfo, warn func(string, ...any)) error {
	e := agent.FileEntry{Path: name, Mode: uint32(fi.Mode()), MTime: fi.ModTime().UnixNano(), ID: len(t.entries)}
	switch {
	case fi.IsDir():
	case fi.Mode()&os.ModeSymlink != 0:
		l, err := os.Readlink(p)
		if err != nil {
			return usagef("%v", err)
		}
		e.Link = l
	case fi.Mode().IsRegular():
		e.Size = fi.Size()
	default:
		warn("%sput: skipping %s: a %s", warnPrefix, p, agent.FileTypeName(fi.Mode()))
		return nil
	}
	t.entries = append(t.entries, e)
	t.local = append(t.local, p)
	return nil
}

func (t *putTask) job(host string) remote.Job {
	return remote.Job{
		Func:  putFunc,
		Desc:  "put",
		Chdir: t.chdir,
		Data:  agent.PutIn{Dest: t.dest, Count: len(t.entries), HomeRelative: t.chdir == ""},
		Callbacks: map[string]remote.Callback{
			agent.CallbackPutList: t.list,
			agent.CallbackPutRead: t.read,
		},
	}
}

// list returns a page of entries, small files with their contents.
func (t *putTask) list(ctx context.Context, req remote.CallbackRequest) (any, error) {
	var in agent.PutListIn
	if err := req.Decode(&in); err != nil {
		return nil, err
	}
	if in.From < 0 || in.From >= len(t.entries) {
		return nil, fmt.Errorf("no entry %d", in.From)
	}
	var out agent.PutListOut
	inline := 0
	i := in.From
	for ; i < len(t.entries) && len(out.Entries) < pageEntries && inline < pageInlineBytes; i++ {
		e := t.entries[i]
		if e.FileMode().IsRegular() && e.Size <= agent.FileInlineMax {
			data, err := readSmall(t.local[i])
			if err != nil {
				e.Err = "local file: " + err.Error()
			} else {
				e.Inline, e.Data, e.Size = true, data, int64(len(data))
				inline += len(data)
			}
		}
		out.Entries = append(out.Entries, e)
	}
	out.Next = i
	return out, nil
}

func readSmall(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, agent.FileInlineMax+1))
	if err != nil {
		return nil, err
	}
	if len(data) > agent.FileInlineMax {
		return nil, errors.New("the file grew while being read")
	}
	return data, nil
}

// read returns a chunk of a large file.
func (t *putTask) read(ctx context.Context, req remote.CallbackRequest) (any, error) {
	var in agent.PutReadIn
	if err := req.Decode(&in); err != nil {
		return nil, err
	}
	if in.ID < 0 || in.ID >= len(t.entries) || !t.entries[in.ID].FileMode().IsRegular() {
		return nil, fmt.Errorf("no file %d", in.ID)
	}
	e := &t.entries[in.ID]
	if in.Offset < 0 || in.Len < 0 || in.Len > maxReadLen || in.Offset+int64(in.Len) > e.Size {
		return nil, fmt.Errorf("read of %d bytes at %d is outside %s", in.Len, in.Offset, e.Path)
	}
	select {
	case t.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-t.sem }()
	f, err := os.Open(t.local[in.ID])
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, in.Len)
	n, err := f.ReadAt(b, in.Offset)
	if err != nil && err != io.EOF {
		return nil, err
	}
	return b[:n], nil
}

func (t *putTask) done(o *outcome, res remote.Result, err error) {
	if o.status != statusOK {
		return
	}
	if err != nil {
		o.status, o.reason = statusFailed, remoteReason(err)
		return
	}
	var out agent.PutOut
	if err := res.Decode(&out); err != nil {
		o.status, o.reason = statusFailed, oneLine(err.Error())
		return
	}
	o.files, o.bytes = &out.Files, &out.Bytes
}

// ---- get ----

// getTask copies trees from every host into LOCAL_DIR/<host>/. Nothing a
// host sends is trusted: see getState.
type getTask struct {
	paths    []string
	localDir string
	chdir    string
	sink     *sink

	mu     sync.Mutex
	states map[string]*getState // by host
}

func (t *getTask) job(host string) remote.Job {
	st := newGetState(host, filepath.Join(t.localDir, hostDirName(host)), t.sink)
	t.mu.Lock()
	if t.states == nil {
		t.states = make(map[string]*getState)
	}
	t.states[host] = st
	t.mu.Unlock()
	return remote.Job{
		Func:  getFunc,
		Desc:  "get",
		Chdir: t.chdir,
		Data:  agent.GetIn{Paths: t.paths, HomeRelative: t.chdir == ""},
		Callbacks: map[string]remote.Callback{
			agent.CallbackGetBegin: getCallback((*getState).begin),
			agent.CallbackGetWrite: getCallback((*getState).write),
			agent.CallbackGetEnd:   getCallback((*getState).end),
		},
		LocalData: st,
	}
}

// getCallback adapts a getState method to a remote.Callback.
func getCallback[In any](m func(*getState, *In) (any, error)) remote.Callback {
	return func(ctx context.Context, req remote.CallbackRequest) (any, error) {
		st, ok := req.LocalData.(*getState)
		if !ok {
			return nil, errors.New("no transfer")
		}
		var in In
		if err := req.Decode(&in); err != nil {
			return nil, err
		}
		return m(st, &in)
	}
}

func (t *getTask) done(o *outcome, res remote.Result, err error) {
	t.mu.Lock()
	st := t.states[o.host]
	t.mu.Unlock()
	var ferr error
	if st != nil {
		ferr = st.finish()
	}
	if o.status != statusOK {
		return
	}
	switch {
	case st != nil && st.openErr != nil:
		o.status, o.reason = statusFailed, oneLine(st.openErr.Error())
	case st != nil && st.refused.Load() > 0:
		o.status, o.reason = statusFailed, fmt.Sprintf("refused %d unsafe names from the host", st.refused.Load())
	case err != nil:
		o.status, o.reason = statusFailed, remoteReason(err)
	case ferr != nil:
		o.status, o.reason = statusFailed, oneLine(ferr.Error())
	default:
		var out agent.GetOut
		if err := res.Decode(&out); err != nil {
			o.status, o.reason = statusFailed, oneLine(err.Error())
			return
		}
		o.files, o.bytes = &out.Files, &out.Bytes
	}
}

// hostDirName is the directory name a host's files go under.
func hostDirName(host string) string {
	s := strings.ReplaceAll(host, "/", hostDirReplacer)
	if s == "." || s == ".." || s == "" {
		s = hostDirReplacer + s
	}
	return s
}

// getState receives one host's files under LOCAL_DIR/<host>.
//
// Every name from the host must be clean, relative and stay inside (no
// "..", no absolute path), and may not pass through a symbolic link
// already in the directory; anything else is refused, and the host fails.
// Files and directories are only ever created through an os.Root, which
// refuses to leave the directory even if the checks above had a hole.
// Symbolic links are created only if their target stays inside: relative,
// and with ".." only as leading elements that do not climb above the
// host's directory (since no entry passes through a link, a link's place
// is its real place, and such a target resolves inside); other links are
// skipped with a warning. Set-id and sticky bits are dropped.
type getState struct {
	host string
	dir  string
	sink *sink

	root    *os.Root // nil when openErr is set
	openErr error
	refused atomic.Int64

	mu      sync.Mutex // guards the fields below
	files   map[int]*getFile
	next    int
	dirs    []getDir
	created map[string]bool // directories this transfer created or checked
	closed  bool
}

type getFile struct {
	final, tmp string
	f          *os.File
	size       int64
	mode       os.FileMode
	mtime      time.Time
	written    atomic.Int64
	bad        atomic.Bool // a write failed
}

type getDir struct {
	path  string
	mode  os.FileMode
	mtime time.Time
}

func newGetState(host, dir string, s *sink) *getState {
	st := &getState{host: host, dir: dir, sink: s, files: map[int]*getFile{}, created: map[string]bool{}}
	if err := os.MkdirAll(dir, getDirMode); err != nil {
		st.openErr = err
		return st
	}
	st.root, st.openErr = os.OpenRoot(dir)
	return st
}

func (g *getState) warn(format string, args ...any) {
	g.sink.line(g.host, streamErr, warnPrefix+"get: "+fmt.Sprintf(format, args...))
}

// refuse records a name the host should never have sent.
func (g *getState) refuse(format string, args ...any) {
	g.refused.Add(1)
	g.warn("refused: "+format, args...)
}

func (g *getState) begin(in *agent.GetBeginIn) (any, error) {
	if g.openErr != nil {
		return nil, g.openErr
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil, errors.New("transfer ended")
	}
	out := agent.GetBeginOut{Handles: make([]int, len(in.Entries))}
	for i := range in.Entries {
		e := &in.Entries[i]
		h, err := g.entryLocked(e, i == len(in.Entries)-1)
		if err != nil {
			g.warn("%s: %v", e.Path, err)
			continue
		}
		out.Handles[i] = h
	}
	return out, nil
}

// errRefused marks an entry refused (already reported).
var errRefused = errors.New("refused")

// entryLocked puts one entry in place; for a large regular file it opens
// the temporary file and returns its handle. g.mu is held.
func (g *getState) entryLocked(e *agent.FileEntry, last bool) (int, error) {
	p := e.Path
	if !agent.LocalPath(p) {
		g.refuse("unsafe path %q", p)
		return 0, nil
	}
	if err := g.checkParentsLocked(p); err != nil {
		if errors.Is(err, errRefused) {
			return 0, nil
		}
		return 0, err
	}
	mode := e.FileMode()
	mtime := time.Unix(0, e.MTime)
	perm := mode & getKeepMode
	switch {
	case mode.IsDir():
		if fi, err := g.root.Lstat(p); err == nil && !fi.IsDir() {
			if fi.Mode()&os.ModeSymlink != 0 {
				g.refuse("%q is a symbolic link here; not making it a directory", p)
				return 0, nil
			}
			return 0, fmt.Errorf("exists and is not a directory")
		}
		if err := g.root.MkdirAll(p, 0o700); err != nil {
			return 0, err
		}
		g.created[p] = true
		g.dirs = append(g.dirs, getDir{p, perm, mtime})
		return 0, nil
	case mode&os.ModeSymlink != 0:
		if !linkInside(p, e.Link) {
			g.warn("skipping symbolic link %s -> %s: its target is outside", p, e.Link)
			return 0, nil
		}
		tmp := agent.TempName(p)
		if err := g.root.Symlink(e.Link, tmp); err != nil {
			return 0, err
		}
		if err := g.root.Rename(tmp, p); err != nil {
			g.root.Remove(tmp)
			return 0, err
		}
		return 0, nil
	case mode.IsRegular():
	default:
		g.refuse("%q is a %s, not a file, directory or link", p, agent.FileTypeName(mode))
		return 0, nil
	}
	if e.Size < 0 || e.Size > maxGetFileSize {
		g.refuse("%q has an impossible size %d", p, e.Size)
		return 0, nil
	}
	if e.Inline {
		if int64(len(e.Data)) != e.Size {
			g.refuse("%q: %d bytes of data for a file of %d", p, len(e.Data), e.Size)
			return 0, nil
		}
		return 0, g.writeWhole(p, e.Data, perm, mtime)
	}
	if !last {
		g.refuse("%q: a streamed file must end its batch", p)
		return 0, nil
	}
	if len(g.files) >= maxOpenPerHost {
		return 0, fmt.Errorf("more than %d files being received at once", maxOpenPerHost)
	}
	tmp := agent.TempName(p)
	f, err := g.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, err
	}
	g.next++
	g.files[g.next] = &getFile{final: p, tmp: tmp, f: f, size: e.Size, mode: perm, mtime: mtime}
	return g.next, nil
}

// checkParentsLocked makes sure no directory on the way to p is a
// symbolic link, and creates the missing ones.
func (g *getState) checkParentsLocked(p string) error {
	dir := path.Dir(p)
	if dir == "." || g.created[dir] {
		return nil
	}
	parts := strings.Split(dir, "/")
	for i := range parts {
		q := strings.Join(parts[:i+1], "/")
		if g.created[q] {
			continue
		}
		fi, err := g.root.Lstat(q)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if err := g.root.Mkdir(q, getDirMode); err != nil && !errors.Is(err, fs.ErrExist) {
				return err
			}
		case err != nil:
			return err
		case fi.Mode()&os.ModeSymlink != 0:
			g.refuse("%q goes through the symbolic link %q", p, q)
			return errRefused
		case !fi.IsDir():
			return fmt.Errorf("%s is not a directory", q)
		}
		g.created[q] = true
	}
	return nil
}

// linkInside reports whether a symbolic link at p (a clean relative path)
// with target stays inside the tree.
func linkInside(p, target string) bool {
	if target == "" || strings.ContainsRune(target, 0) || path.IsAbs(target) || filepath.IsAbs(target) {
		return false
	}
	up := 0
	down := false
	for _, el := range strings.Split(target, "/") {
		switch el {
		case "", ".":
		case "..":
			if down {
				return false // ".." after a name could climb out through a link
			}
			up++
		default:
			down = true
		}
	}
	depth := strings.Count(p, "/") // directories above the link
	return up <= depth
}

// writeWhole writes a small file through a temporary name.
func (g *getState) writeWhole(p string, data []byte, mode os.FileMode, mtime time.Time) error {
	tmp := agent.TempName(p)
	f, err := g.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	gf := &getFile{final: p, tmp: tmp, f: f, size: int64(len(data)), mode: mode, mtime: mtime}
	if _, err := f.Write(data); err != nil {
		g.discard(gf)
		return err
	}
	gf.written.Store(int64(len(data)))
	return g.install(gf)
}

// install syncs a received file, gives it its mode and time and renames it
// into place.
func (g *getState) install(gf *getFile) error {
	err := gf.f.Sync()
	if err == nil {
		err = gf.f.Chmod(gf.mode)
	}
	if cerr := gf.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = g.root.Chtimes(gf.tmp, gf.mtime, gf.mtime)
	}
	if err == nil {
		err = g.root.Rename(gf.tmp, gf.final)
	}
	if err != nil {
		g.root.Remove(gf.tmp)
	}
	return err
}

func (g *getState) discard(gf *getFile) {
	gf.f.Close()
	g.root.Remove(gf.tmp)
}

func (g *getState) file(h int) (*getFile, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil, errors.New("transfer ended")
	}
	gf := g.files[h]
	if gf == nil {
		return nil, fmt.Errorf("no open file %d", h)
	}
	return gf, nil
}

func (g *getState) write(in *agent.GetWriteIn) (any, error) {
	gf, err := g.file(in.Handle)
	if err != nil {
		return nil, err
	}
	if in.Offset < 0 || in.Offset+int64(len(in.Data)) > gf.size {
		gf.bad.Store(true)
		return nil, fmt.Errorf("write of %d bytes at %d is outside %s (%d bytes)", len(in.Data), in.Offset, gf.final, gf.size)
	}
	if _, err := gf.f.WriteAt(in.Data, in.Offset); err != nil {
		gf.bad.Store(true)
		return nil, err
	}
	gf.written.Add(int64(len(in.Data)))
	return nil, nil
}

func (g *getState) end(in *agent.GetEndIn) (any, error) {
	g.mu.Lock()
	gf := g.files[in.Handle]
	delete(g.files, in.Handle)
	closed := g.closed
	g.mu.Unlock()
	if gf == nil || closed {
		return nil, fmt.Errorf("no open file %d", in.Handle)
	}
	switch {
	case in.Err != "":
		g.discard(gf)
		return nil, nil // the host reports its own error
	case gf.bad.Load() || gf.written.Load() != gf.size:
		g.discard(gf)
		err := fmt.Errorf("%s: received %d bytes of %d", gf.final, gf.written.Load(), gf.size)
		g.warn("%v", err)
		return nil, err
	}
	if err := g.install(gf); err != nil {
		g.warn("%s: %v", gf.final, err)
		return nil, err
	}
	return nil, nil
}

// finish ends the transfer: partial files are removed, directories get
// their modes and times (deepest first), the root is closed.
func (g *getState) finish() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed || g.root == nil {
		g.closed = true
		return nil
	}
	g.closed = true
	for h, gf := range g.files {
		g.discard(gf)
		delete(g.files, h)
	}
	sort.SliceStable(g.dirs, func(i, j int) bool {
		return strings.Count(g.dirs[i].path, "/") > strings.Count(g.dirs[j].path, "/")
	})
	var first error
	for _, d := range g.dirs {
		if err := g.root.Chmod(d.path, d.mode); err != nil && first == nil {
			first = err
		}
		if err := g.root.Chtimes(d.path, d.mtime, d.mtime); err != nil && first == nil {
			first = err
		}
	}
	g.root.Close()
	return first
}
