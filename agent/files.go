package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/toworker/toworker/callback"
)

// File copying: the built-in functions behind `toworker put` and
// `toworker get`. Contents travel in chunks through callbacks to the
// master, a few chunks in flight at a time, so neither side ever holds a
// whole large file in memory. Small files travel inline with their entry.
// A file is written under a temporary name in its final directory, synced,
// given its mode and modification time, then renamed: a partial file is
// never left under its final name.
//
// put (master → host): the master walks the local sources; the host's
// PutFiles pages through the master's list of entries (CallbackPutList)
// and reads the chunks of large files (CallbackPutRead).
//
// get (host → master): the host's GetFiles walks the remote paths and hands
// the master batches of entries (CallbackGetBegin, small files inline); for
// a large file the master answers with a handle the host then writes chunks
// to (CallbackGetWrite) and ends (CallbackGetEnd). The master trusts no
// name it is given: see the cli package.

// Names of the callbacks the file functions call on the master. The master
// provides them in the job's Callbacks.
const (
	// CallbackPutList takes a PutListIn and returns a PutListOut.
	CallbackPutList = "toworker.put.list"
	// CallbackPutRead takes a PutReadIn and returns the bytes read.
	CallbackPutRead = "toworker.put.read"
	// CallbackGetBegin takes a GetBeginIn and returns a GetBeginOut.
	CallbackGetBegin = "toworker.get.begin"
	// CallbackGetWrite takes a GetWriteIn and returns nothing.
	CallbackGetWrite = "toworker.get.write"
	// CallbackGetEnd takes a GetEndIn and returns nothing.
	CallbackGetEnd = "toworker.get.end"
)

// Transfer sizes.
const (
	// FileChunkSize is the size of the pieces large files travel in.
	FileChunkSize = 1 << 20
	// FileInlineMax is the largest file whose contents travel inline,
	// with its entry, instead of in chunks.
	FileInlineMax = 64 << 10
	// fileParallel is how many chunks of one file are in flight at once.
	fileParallel = 4
	// batchBytes and batchEntries bound one batch of entries.
	batchBytes   = 1 << 20
	batchEntries = 1000
)

// FileEntry is one file, directory or symbolic link of a tree being copied.
type FileEntry struct {
	// Path is slash-separated and relative to the destination directory;
	// its first element is the base name of the source given on the
	// command line.
	Path string `cbor:"1,keyasint"`
	// Mode is the os.FileMode: type bits and permissions.
	Mode uint32 `cbor:"2,keyasint"`
	// MTime is the modification time in Unix nanoseconds.
	MTime int64 `cbor:"3,keyasint"`
	// Size is a regular file's size in bytes.
	Size int64 `cbor:"4,keyasint,omitempty"`
	// Link is a symbolic link's target.
	Link string `cbor:"5,keyasint,omitempty"`
	// Inline, for a regular file, says that Data holds its whole contents.
	Inline bool   `cbor:"6,keyasint,omitempty"`
	Data   []byte `cbor:"7,keyasint,omitempty"`
	// ID is the master's number for a file in put, used in PutReadIn.
	ID int `cbor:"8,keyasint,omitempty"`
	// Err, in put, is why the master could not read the file; the host
	// reports it and skips the entry.
	Err string `cbor:"9,keyasint,omitempty"`
}

// FileMode returns e.Mode as an os.FileMode.
func (e *FileEntry) FileMode() os.FileMode { return os.FileMode(e.Mode) }

// PutIn is the input of PutFiles.
type PutIn struct {
	// Dest is the directory on the host to copy into, created if
	// missing; relative to the job's directory, or to the user's home
	// directory with HomeRelative.
	Dest string `cbor:"1,keyasint"`
	// Count is the number of entries the master lists.
	Count int `cbor:"2,keyasint"`
	// HomeRelative makes a relative Dest relative to the home directory,
	// as ssh and scp resolve relative paths.
	HomeRelative bool `cbor:"3,keyasint,omitempty"`
}

// PutListIn asks the master for its entries from index From on.
type PutListIn struct {
	From int `cbor:"1,keyasint"`
}

// PutListOut is a page of the master's entries; Next is the index of the
// entry after the last one returned.
type PutListOut struct {
	Entries []FileEntry `cbor:"1,keyasint"`
	Next    int         `cbor:"2,keyasint"`
}

// PutReadIn asks the master for Len bytes at Offset of file ID.
type PutReadIn struct {
	ID     int   `cbor:"1,keyasint"`
	Offset int64 `cbor:"2,keyasint"`
	Len    int   `cbor:"3,keyasint"`
}

// PutOut counts what PutFiles wrote.
type PutOut struct {
	Files int   `cbor:"1,keyasint"`
	Dirs  int   `cbor:"2,keyasint"`
	Links int   `cbor:"3,keyasint"`
	Bytes int64 `cbor:"4,keyasint"`
}

// GetIn is the input of GetFiles: the files and directories to send, each
// absolute or relative to the job's directory (or, with HomeRelative, to
// the user's home directory, as scp resolves relative paths).
type GetIn struct {
	Paths        []string `cbor:"1,keyasint"`
	HomeRelative bool     `cbor:"2,keyasint,omitempty"`
}

// GetBeginIn hands the master a batch of entries. Directories, links and
// inline files are done once the call returns; a large file (at most one,
// the last) gets a handle to write its contents to.
type GetBeginIn struct {
	Entries []FileEntry `cbor:"1,keyasint"`
}

// GetBeginOut has one handle per entry of the batch: non-zero for a large
// file the master is ready to receive, zero otherwise (including a file
// the master refused).
type GetBeginOut struct {
	Handles []int `cbor:"1,keyasint"`
}

// GetWriteIn is one chunk of a large file.
type GetWriteIn struct {
	Handle int    `cbor:"1,keyasint"`
	Offset int64  `cbor:"2,keyasint"`
	Data   []byte `cbor:"3,keyasint"`
}

// GetEndIn ends a large file: the master puts it in place, or discards it
// when Err says the host could not read it all.
type GetEndIn struct {
	Handle int    `cbor:"1,keyasint"`
	Err    string `cbor:"2,keyasint,omitempty"`
}

// GetOut counts what GetFiles sent.
type GetOut struct {
	Files   int   `cbor:"1,keyasint"`
	Dirs    int   `cbor:"2,keyasint"`
	Links   int   `cbor:"3,keyasint"`
	Bytes   int64 `cbor:"4,keyasint"`
	Skipped int   `cbor:"5,keyasint"` // special files (devices, sockets, fifos) left out
}

// PutFiles is the built-in function behind `toworker put`: it copies the
// master's entries into PutIn.Dest.
var PutFiles = Register("toworker.put", putFiles)

// GetFiles is the built-in function behind `toworker get`: it sends the
// trees at GetIn.Paths to the master.
var GetFiles = Register("toworker.get", getFiles)

// TempName returns a fresh temporary name beside final (same directory),
// hidden and recognisable: ".NAME.toworker-RANDOM".
func TempName(final string) string {
	var b [6]byte
	rand.Read(b[:])
	dir, base := path.Split(filepath.ToSlash(final))
	return filepath.FromSlash(dir + "." + base + ".toworker-" + hex.EncodeToString(b[:]))
}

// LocalPath reports whether p, a slash-separated entry path, is clean,
// relative and stays inside the directory it is relative to.
func LocalPath(p string) bool {
	return p != "" && !strings.ContainsRune(p, 0) && path.Clean(p) == p && filepath.IsLocal(filepath.FromSlash(p))
}

// resolve makes a relative path relative to the home directory when
// homeRelative is set.
func resolve(p string, homeRelative bool) (string, error) {
	if !homeRelative || filepath.IsAbs(p) {
		return p, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(home, p), nil
}

func warnf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "toworker: "+format+"\n", args...)
}

// dirFix is a directory whose mode and time are set once its contents are
// in place.
type dirFix struct {
	path  string
	mode  os.FileMode
	mtime time.Time
}

func fixDirs(dirs []dirFix) error {
	var first error
	for i := len(dirs) - 1; i >= 0; i-- {
		d := dirs[i]
		if err := os.Chmod(d.path, d.mode); err != nil && first == nil {
			first = err
		}
		if err := os.Chtimes(d.path, d.mtime, d.mtime); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// FileTypeName names the type of a special file ("named pipe", "socket",
// …), for messages about files put and get skip.
func FileTypeName(m os.FileMode) string {
	switch {
	case m&os.ModeNamedPipe != 0:
		return "named pipe"
	case m&os.ModeSocket != 0:
		return "socket"
	case m&os.ModeCharDevice != 0:
		return "character device"
	case m&os.ModeDevice != 0:
		return "device"
	}
	return "special file"
}

// keepMode is the mode bits copying keeps.
const keepMode = os.ModePerm | os.ModeSetuid | os.ModeSetgid | os.ModeSticky

func putFiles(ctx context.Context, in PutIn) (PutOut, error) {
	var out PutOut
	if in.Dest == "" {
		return out, errors.New("put: no destination directory")
	}
	dest, err := resolve(in.Dest, in.HomeRelative)
	if err != nil {
		return out, fmt.Errorf("put: %w", err)
	}
	in.Dest = dest
	if err := os.MkdirAll(in.Dest, 0o755); err != nil {
		return out, fmt.Errorf("put: %w", err)
	}
	if fi, err := os.Stat(in.Dest); err != nil || !fi.IsDir() {
		return out, fmt.Errorf("put: %s is not a directory", in.Dest)
	}
	var dirs []dirFix
	failed := 0
	for from := 0; from < in.Count; {
		var page PutListOut
		if err := callback.Call(ctx, CallbackPutList, PutListIn{From: from}, &page); err != nil {
			return out, fmt.Errorf("put: list entries: %w", err)
		}
		if page.Next <= from {
			return out, fmt.Errorf("put: the master's list did not advance at entry %d", from)
		}
		from = page.Next
		for i := range page.Entries {
			if err := putEntry(ctx, in.Dest, &page.Entries[i], &out, &dirs); err != nil {
				if ctx.Err() != nil {
					return out, ctx.Err()
				}
				warnf("put %s: %v", page.Entries[i].Path, err)
				failed++
			}
		}
	}
	if err := fixDirs(dirs); err != nil {
		warnf("put: %v", err)
		failed++
	}
	if failed > 0 {
		return out, fmt.Errorf("put: %d of %d entries failed", failed, in.Count)
	}
	return out, nil
}

func putEntry(ctx context.Context, dest string, e *FileEntry, out *PutOut, dirs *[]dirFix) error {
	if !LocalPath(e.Path) {
		return fmt.Errorf("refusing path %q", e.Path)
	}
	if e.Err != "" {
		return errors.New(e.Err)
	}
	target := filepath.Join(dest, filepath.FromSlash(e.Path))
	mode := e.FileMode()
	mtime := time.Unix(0, e.MTime)
	switch {
	case mode.IsDir():
		if err := os.MkdirAll(target, 0o700); err != nil {
			return err
		}
		if fi, err := os.Lstat(target); err != nil || !fi.IsDir() {
			return fmt.Errorf("%s exists and is not a directory", target)
		}
		*dirs = append(*dirs, dirFix{target, mode & keepMode, mtime})
		out.Dirs++
		return nil
	case mode&os.ModeSymlink != 0:
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		tmp := TempName(target)
		if err := os.Symlink(e.Link, tmp); err != nil {
			return err
		}
		if err := os.Rename(tmp, target); err != nil {
			os.Remove(tmp)
			return err
		}
		out.Links++
		return nil
	case mode.IsRegular():
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		n, err := writeFileAtomic(target, mode&keepMode, mtime, func(f *os.File) (int64, error) {
			if e.Inline {
				if int64(len(e.Data)) != e.Size {
					return 0, fmt.Errorf("inline data is %d bytes, not %d", len(e.Data), e.Size)
				}
				_, err := f.Write(e.Data)
				return e.Size, err
			}
			return e.Size, forChunks(ctx, e.Size, func(ctx context.Context, off int64, n int) error {
				var b []byte
				if err := callback.Call(ctx, CallbackPutRead, PutReadIn{ID: e.ID, Offset: off, Len: n}, &b); err != nil {
					return err
				}
				if len(b) != n {
					return fmt.Errorf("the local file changed while being read (%d bytes at offset %d, expected %d)", len(b), off, n)
				}
				_, err := f.WriteAt(b, off)
				return err
			})
		})
		if err != nil {
			return err
		}
		out.Files++
		out.Bytes += n
		return nil
	default:
		return fmt.Errorf("cannot create a %s", FileTypeName(mode))
	}
}

// writeFileAtomic writes target through a temporary file in its directory:
// fill writes the contents, then the file is synced, given mode and mtime,
// and renamed into place. On error the temporary file is removed.
func writeFileAtomic(target string, mode os.FileMode, mtime time.Time, fill func(*os.File) (int64, error)) (n int64, err error) {
	tmp := TempName(target)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if n, err = fill(f); err != nil {
		return 0, err
	}
	if err = f.Sync(); err != nil {
		return 0, err
	}
	if err = f.Chmod(mode); err != nil {
		return 0, err
	}
	if err = f.Close(); err != nil {
		return 0, err
	}
	if err = os.Chtimes(tmp, mtime, mtime); err != nil {
		return 0, err
	}
	if err = os.Rename(tmp, target); err != nil {
		return 0, err
	}
	return n, nil
}

// forChunks calls fn for each chunk of a size-byte file, up to
// fileParallel at once, and returns the first error.
func forChunks(ctx context.Context, size int64, fn func(ctx context.Context, off int64, n int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, fileParallel)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for off := int64(0); off < size; off += FileChunkSize {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		n := int(min(FileChunkSize, size-off))
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := fn(ctx, off, n); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
				cancel()
			}
		}()
	}
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		first = ctx.Err()
	}
	return first
}

// getSender batches entries for the master.
type getSender struct {
	ctx   context.Context
	batch []FileEntry
	bytes int
	out   GetOut
	fails int
}

func getFiles(ctx context.Context, in GetIn) (GetOut, error) {
	s := &getSender{ctx: ctx}
	if len(in.Paths) == 0 {
		return s.out, errors.New("get: no paths given")
	}
	for _, p := range in.Paths {
		p, err := resolve(p, in.HomeRelative)
		if err == nil {
			err = s.sendRoot(p)
		}
		if err != nil {
			if ctx.Err() != nil {
				return s.out, ctx.Err()
			}
			var cerr *callback.Error
			if errors.As(err, &cerr) && cerr.Kind != "error" {
				return s.out, fmt.Errorf("get: %w", err)
			}
			warnf("get %s: %v", p, err)
			s.fails++
		}
	}
	if err := s.flush(); err != nil {
		return s.out, fmt.Errorf("get: %w", err)
	}
	if s.fails > 0 {
		return s.out, fmt.Errorf("get: %d files or directories could not be sent", s.fails)
	}
	return s.out, nil
}

// sendRoot sends one path given on the command line: a symbolic link there
// is followed, links inside a tree are sent as links.
func (s *getSender) sendRoot(p string) error {
	abs, err := filepath.Abs(p)
	if err != nil {
		return err
	}
	base := filepath.Base(abs)
	if base == string(filepath.Separator) || base == "." || base == ".." {
		return fmt.Errorf("cannot name a copy of %s: give a directory below it", abs)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return s.sendOne(abs, base, fi)
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return err
	}
	return filepath.WalkDir(real, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == real {
				return err
			}
			warnf("get %s: %v", p, err)
			s.fails++
			return nil
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
			warnf("get %s: %v", p, err)
			s.fails++
			return nil
		}
		if err := s.sendOne(p, name, fi); err != nil {
			var cerr *callback.Error
			if s.ctx.Err() != nil || (errors.As(err, &cerr) && cerr.Kind != "error") {
				return err
			}
			warnf("get %s: %v", p, err)
			s.fails++
		}
		return nil
	})
}

// sendOne sends the entry for local path p under the name name.
func (s *getSender) sendOne(p, name string, fi fs.FileInfo) error {
	e := FileEntry{Path: name, Mode: uint32(fi.Mode()), MTime: fi.ModTime().UnixNano()}
	switch {
	case fi.IsDir():
		s.out.Dirs++
		return s.add(e)
	case fi.Mode()&os.ModeSymlink != 0:
		t, err := os.Readlink(p)
		if err != nil {
			return err
		}
		e.Link = t
		s.out.Links++
		return s.add(e)
	case fi.Mode().IsRegular():
	default:
		warnf("get %s: skipping %s", p, FileTypeName(fi.Mode()))
		s.out.Skipped++
		return nil
	}
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	e.Size = fi.Size()
	if e.Size <= FileInlineMax {
		data, err := io.ReadAll(io.LimitReader(f, FileInlineMax+1))
		if err != nil {
			return err
		}
		if len(data) > FileInlineMax {
			return errors.New("file grew while being read")
		}
		e.Size, e.Inline, e.Data = int64(len(data)), true, data
		s.out.Files++
		s.out.Bytes += e.Size
		return s.add(e)
	}
	// A large file ends the batch and gets a handle to stream into.
	s.batch = append(s.batch, e)
	handles, err := s.send()
	if err != nil {
		return err
	}
	h := handles[len(handles)-1]
	if h == 0 {
		return nil // refused by the master, which says why
	}
	rerr := forChunks(s.ctx, e.Size, func(ctx context.Context, off int64, n int) error {
		b := make([]byte, n)
		if _, err := f.ReadAt(b, off); err != nil {
			if err == io.EOF {
				return errors.New("file shrank while being read")
			}
			return err
		}
		return callback.Call(ctx, CallbackGetWrite, GetWriteIn{Handle: h, Offset: off, Data: b}, nil)
	})
	end := GetEndIn{Handle: h}
	if rerr != nil {
		end.Err = rerr.Error()
	}
	if err := callback.Call(s.ctx, CallbackGetEnd, end, nil); err != nil {
		return err
	}
	if rerr != nil {
		return rerr
	}
	s.out.Files++
	s.out.Bytes += e.Size
	return nil
}

func (s *getSender) add(e FileEntry) error {
	s.batch = append(s.batch, e)
	s.bytes += len(e.Data) + len(e.Path) + len(e.Link)
	if s.bytes >= batchBytes || len(s.batch) >= batchEntries {
		return s.flush()
	}
	return nil
}

func (s *getSender) flush() error {
	if len(s.batch) == 0 {
		return nil
	}
	_, err := s.send()
	return err
}

func (s *getSender) send() ([]int, error) {
	var out GetBeginOut
	err := callback.Call(s.ctx, CallbackGetBegin, GetBeginIn{Entries: s.batch}, &out)
	n := len(s.batch)
	s.batch = s.batch[:0]
	s.bytes = 0
	if err != nil {
		return nil, err
	}
	if len(out.Handles) != n {
		return nil, fmt.Errorf("the master answered %d handles for %d entries", len(out.Handles), n)
	}
	return out.Handles, nil
}
