package rawio

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// Data larger than a pipe's or socket's buffer goes through whole (the
// writer waits on the poller when the buffer is full), the reader sees end
// of file when the writer closes, and a read deadline still applies.
func TestRoundTrip(t *testing.T) {
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	a, b := unixPair(t)
	for name, ends := range map[string][2]ReadWriteConn{"pipe": {pr, pw}, "unix socket": {a, b}} {
		t.Run(name, func(t *testing.T) {
			want := make([]byte, 4<<20)
			rand.Read(want)
			errc := make(chan error, 1)
			go func() {
				n, err := New(ends[1]).Write(want)
				if err == nil && n != len(want) {
					err = io.ErrShortWrite
				}
				ends[1].(io.Closer).Close()
				errc <- err
			}()
			got, err := io.ReadAll(New(ends[0]))
			if err != nil {
				t.Fatal(err)
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("read %d bytes that differ from the %d written", len(got), len(want))
			}
		})
	}
	c, _ := unixPair(t)
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := New(c).Read(make([]byte, 10)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v, want os.ErrDeadlineExceeded", err)
	}
}

func unixPair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	dir := t.TempDir()
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: dir + "/s", Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	a, err := net.DialUnix("unix", nil, l.Addr().(*net.UnixAddr))
	if err != nil {
		t.Fatal(err)
	}
	b, err := l.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}
