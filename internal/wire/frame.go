package wire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
)

// Frame is one frame as read from or written to a stream.
type Frame struct {
	Kind    Kind
	More    bool // more frames of this message follow
	Job     uint32
	Payload []byte
}

// Limits bound what a Reader accepts. The zero value uses the defaults.
type Limits struct {
	// MaxMessage caps one message assembled from frames; zero means
	// DefaultMaxMessage.
	MaxMessage int
	// MaxPartial caps the bytes held in all partially received messages
	// at once; zero means 2 × MaxMessage.
	MaxPartial int
}

func (l Limits) maxMessage() int {
	if l.MaxMessage <= 0 {
		return DefaultMaxMessage
	}
	return l.MaxMessage
}

func (l Limits) maxPartial() int {
	if l.MaxPartial <= 0 {
		return 2 * l.maxMessage()
	}
	return l.MaxPartial
}

// Reader reads frames, and messages assembled from frames, from a stream.
// It is not safe for concurrent use: one goroutine owns it.
type Reader struct {
	r     *bufio.Reader
	lim   Limits
	hdr   [HeaderLen]byte
	parts map[partKey][]byte // messages being assembled; owned by the reader
	held  int                // bytes in parts
}

type partKey struct {
	job  uint32
	kind Kind
}

// NewReader returns a Reader over r. If r is already a *bufio.Reader it is
// used as is.
func NewReader(r io.Reader, lim Limits) *Reader {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(r, 64<<10)
	}
	return &Reader{r: br, lim: lim}
}

// Buffered returns the underlying buffered reader, for callers that must read
// a text preamble before the frames start.
func (r *Reader) Buffered() *bufio.Reader { return r.r }

// ReadFrame reads one frame. Its payload is freshly allocated and owned by the
// caller. Errors other than io.EOF at a frame boundary are *ProtocolError or
// the underlying read error wrapped with io.ErrUnexpectedEOF.
func (r *Reader) ReadFrame() (Frame, error) {
	if _, err := io.ReadFull(r.r, r.hdr[:]); err != nil {
		if err == io.ErrUnexpectedEOF {
			return Frame{}, protoErr("read frame header", err)
		}
		return Frame{}, err
	}
	n := binary.BigEndian.Uint32(r.hdr[0:4])
	k := Kind(r.hdr[4] &^ moreBit)
	f := Frame{Kind: k, More: r.hdr[4]&moreBit != 0, Job: binary.BigEndian.Uint32(r.hdr[5:9])}
	if n > MaxFrame {
		return Frame{}, protoErr("read frame", fmt.Errorf("%w: %s frame of job %d claims %d bytes (limit %d)", ErrFrameTooLarge, k, f.Job, n, MaxFrame))
	}
	if !k.Valid() {
		return Frame{}, protoErr("read frame", fmt.Errorf("%w %d", ErrUnknownKind, uint8(k)))
	}
	f.Payload = make([]byte, n)
	if _, err := io.ReadFull(r.r, f.Payload); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return Frame{}, protoErr(fmt.Sprintf("read %s frame payload", k), err)
	}
	return f, nil
}

// ReadMessage reads frames until one message is complete and returns it as a
// frame whose Payload holds the whole message. Raw output frames are returned
// as they come. Partial messages of different jobs may interleave.
func (r *Reader) ReadMessage() (Frame, error) {
	for {
		f, err := r.ReadFrame()
		if err != nil {
			return f, err
		}
		if f.Kind == KindAbort {
			r.drop(f.Job)
			continue
		}
		key := partKey{f.Job, f.Kind}
		prev, partial := r.parts[key]
		if !f.More && !partial {
			return f, nil
		}
		if f.Kind.Raw() {
			return Frame{}, protoErr("read message", fmt.Errorf("%s frame with more bit", f.Kind))
		}
		if len(prev)+len(f.Payload) > r.lim.maxMessage() {
			return Frame{}, protoErr("read message", fmt.Errorf("%w: %s message of job %d exceeds %d bytes", ErrMessageTooLarge, f.Kind, f.Job, r.lim.maxMessage()))
		}
		if r.held+len(f.Payload) > r.lim.maxPartial() {
			return Frame{}, protoErr("read message", fmt.Errorf("%w: partial messages exceed %d bytes", ErrMessageTooLarge, r.lim.maxPartial()))
		}
		if r.parts == nil {
			r.parts = make(map[partKey][]byte)
		}
		prev = append(prev, f.Payload...)
		r.held += len(f.Payload)
		if f.More {
			r.parts[key] = prev
			continue
		}
		delete(r.parts, key)
		r.held -= len(prev)
		f.Payload = prev
		return f, nil
	}
}

func (r *Reader) drop(job uint32) {
	for k, v := range r.parts {
		if k.job == job {
			r.held -= len(v)
			delete(r.parts, k)
		}
	}
}

// Writer writes frames to a stream. It is safe for concurrent use: frames are
// written whole, and the stream is flushed when the last concurrent writer
// finishes, so that writes arriving together share one flush.
type Writer struct {
	waiting atomic.Int32 // writers that have not yet finished a frame

	mu  sync.Mutex // guards w, err and big
	w   *bufio.Writer
	err error // sticky write error
	big map[partKey]chan struct{}
}

// NewWriter returns a Writer over w with a 64 KiB buffer.
func NewWriter(w io.Writer) *Writer { return NewWriterSize(w, 64<<10) }

// NewWriterSize returns a Writer over w with a buffer of size bytes. Frames
// larger than the buffer are written through without copying, so a small
// buffer costs batching of small frames only.
func NewWriterSize(w io.Writer, size int) *Writer {
	return &Writer{w: bufio.NewWriterSize(w, size)}
}

// WriteFrame writes one frame. The payload must not exceed MaxFrame.
func (w *Writer) WriteFrame(f Frame) error {
	if len(f.Payload) > MaxFrame {
		return fmt.Errorf("wire: %s frame of %d bytes: %w", f.Kind, len(f.Payload), ErrFrameTooLarge)
	}
	w.waiting.Add(1)
	w.mu.Lock()
	err := w.writeLocked(f)
	w.mu.Unlock()
	return err
}

// writeLocked writes f and flushes when no other writer is waiting.
// w.mu is held.
func (w *Writer) writeLocked(f Frame) error {
	if w.err == nil {
		var hdr [HeaderLen]byte
		putHeader(hdr[:], f, len(f.Payload))
		w.w.Write(hdr[:])
		_, w.err = w.w.Write(f.Payload)
	}
	w.releaseLocked()
	return w.err
}

// releaseLocked ends one writer's turn, flushing when no other writer waits.
// w.mu is held.
func (w *Writer) releaseLocked() {
	if w.waiting.Add(-1) == 0 && w.err == nil && w.w.Buffered() > 0 {
		w.err = w.w.Flush()
	}
}

// WriteMessage writes payload as one message of kind k for job, split into
// frames of at most ChunkSize. While a message is split, other messages of the
// same job and kind wait for it, so the reader never mixes two of them.
func (w *Writer) WriteMessage(k Kind, job uint32, payload []byte) error {
	key := partKey{job, k}
	for {
		w.waiting.Add(1)
		w.mu.Lock()
		wait, busy := w.big[key]
		if !busy {
			if len(payload) <= ChunkSize {
				err := w.writeLocked(Frame{Kind: k, Job: job, Payload: payload})
				w.mu.Unlock()
				return err
			}
			break
		}
		w.releaseLocked()
		w.mu.Unlock()
		<-wait
	}
	// A multi-frame message: mark it in flight, then write chunk by chunk,
	// letting other frames in between.
	done := make(chan struct{})
	if w.big == nil {
		w.big = make(map[partKey]chan struct{})
	}
	w.big[key] = done
	w.releaseLocked()
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		delete(w.big, key)
		w.mu.Unlock()
		close(done)
	}()
	for len(payload) > 0 {
		n := min(len(payload), ChunkSize)
		f := Frame{Kind: k, Job: job, Payload: payload[:n], More: n < len(payload)}
		if err := w.WriteFrame(f); err != nil {
			return err
		}
		payload = payload[n:]
	}
	return nil
}

// Err returns the first write error, if any.
func (w *Writer) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// AppendFrame appends the encoding of f (header and payload) to dst.
func AppendFrame(dst []byte, f Frame) []byte {
	var hdr [HeaderLen]byte
	putHeader(hdr[:], f, len(f.Payload))
	dst = append(dst, hdr[:]...)
	return append(dst, f.Payload...)
}

func putHeader(hdr []byte, f Frame, n int) {
	binary.BigEndian.PutUint32(hdr[0:4], uint32(n))
	hdr[4] = byte(f.Kind)
	if f.More {
		hdr[4] |= moreBit
	}
	binary.BigEndian.PutUint32(hdr[5:9], f.Job)
}

// ErrWriterClosed is returned by writes after Close.
var ErrWriterClosed = errors.New("wire: writer closed")

// Close flushes what is buffered, then closes c (normally the stream under
// the writer) while no write is under way, so that the stream's Close never
// races a Write. Later writes fail with ErrWriterClosed.
func (w *Writer) Close(c io.Closer) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		w.err = w.w.Flush()
	}
	if w.err == nil {
		w.err = ErrWriterClosed
	}
	return c.Close()
}
