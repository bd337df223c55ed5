package sshdial

import (
	"bufio"
	"crypto/rand"
	"io"
	"sync"
)

// entropy is the Rand of every client connection: crypto/rand, read 4 KiB
// at a time. x/crypto/ssh draws random padding for every packet it sends;
// reading it straight from crypto/rand costs one getrandom system call per
// packet, a measurable share of a small call's round trip. The bytes are the
// same CSPRNG output either way, only fetched in bulk.
var entropy io.Reader = &lockedReader{r: bufio.NewReaderSize(rand.Reader, 4096)}

type lockedReader struct {
	mu sync.Mutex
	r  io.Reader
}

func (l *lockedReader) Read(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return io.ReadFull(l.r, p)
}
