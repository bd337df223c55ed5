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

// FrameBuffered reports whether a whole frame has already been read into
// the buffer, so that reading it will not block.
func (r *Reader) FrameBuffered() bool {
	n := r.r.Buffered()
	if n < HeaderLen {
		return false
	}
	hdr, err := r.r.Peek(HeaderLen)
	if err != nil {
		return false
	}
	return uint64(binary.BigEndian.Uint32(hdr[0:4])) <= uint64(n-HeaderLen)
}

// ReadFrame reads one frame. Its payload is freshly allocated and owned by the
// caller. Errors other than io.EOF at a frame boundary are *ProtocolError or
// the underlying read error wrapped with io.ErrUnexpectedEOF.
func (r *Reader) ReadFrame() (Frame, error) { return r.ReadFrameReuse(nil) }

// ReadFrameReuse is ReadFrame reading the payload into buf when it is large
// enough, for a caller that is done with each frame before reading the next
// (a forwarder). The payload then aliases buf.
func (r *Reader) ReadFrameReuse(buf []byte) (Frame, error) {
	f, n, err := r.readHeader()
	if err != nil {
		return f, err
	}
	if cap(buf) >= n {
		f.Payload = buf[:n]
	} else {
		f.Payload = make([]byte, n)
	}
	if err := r.readPayload(f, f.Payload); err != nil {
		return Frame{}, err
	}
	return f, nil
}

// readHeader reads and checks a frame header; n is its payload's length.
func (r *Reader) readHeader() (f Frame, n int, err error) {
	if _, err := io.ReadFull(r.r, r.hdr[:]); err != nil {
		if err == io.ErrUnexpectedEOF {
			return Frame{}, 0, protoErr("read frame header", err)
		}
		return Frame{}, 0, err
	}
	size := binary.BigEndian.Uint32(r.hdr[0:4])
	k := Kind(r.hdr[4] &^ moreBit)
	f = Frame{Kind: k, More: r.hdr[4]&moreBit != 0, Job: binary.BigEndian.Uint32(r.hdr[5:9])}
	if size > MaxFrame {
		return Frame{}, 0, protoErr("read frame", fmt.Errorf("%w: %s frame of job %d claims %d bytes (limit %d)", ErrFrameTooLarge, k, f.Job, size, MaxFrame))
	}
	if !k.Valid() {
		return Frame{}, 0, protoErr("read frame", fmt.Errorf("%w %d", ErrUnknownKind, uint8(k)))
	}
	return f, int(size), nil
}

// readPayload reads len(p) bytes of f's payload into p.
func (r *Reader) readPayload(f Frame, p []byte) error {
	if _, err := io.ReadFull(r.r, p); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return protoErr(fmt.Sprintf("read %s frame payload", f.Kind), err)
	}
	return nil
}

// ReadMessage reads frames until one message is complete and returns it as a
// frame whose Payload holds the whole message. Raw output frames are returned
// as they come. Partial messages of different jobs may interleave.
//
// The first frame of a split message announces the message's size (see
// sizePrefixLen), so its frames are read straight into one buffer of that
// size: a large message is neither copied nor reallocated as it arrives.
func (r *Reader) ReadMessage() (Frame, error) {
	for {
		f, n, err := r.readHeader()
		if err != nil {
			return f, err
		}
		key := partKey{f.Job, f.Kind}
		msg, partial := r.parts[key]
		if f.Kind == KindAbort || (!f.More && !partial) {
			f.Payload = make([]byte, n)
			if err := r.readPayload(f, f.Payload); err != nil {
				return Frame{}, err
			}
			if f.Kind == KindAbort {
				r.drop(f.Job)
				continue
			}
			return f, nil
		}
		if f.Kind.Raw() {
			return Frame{}, protoErr("read message", fmt.Errorf("%s frame with more bit", f.Kind))
		}
		if !partial {
			if msg, n, err = r.startMessage(f, n); err != nil {
				return Frame{}, err
			}
		}
		if len(msg)+n > cap(msg) {
			return Frame{}, protoErr("read message", fmt.Errorf("%s message of job %d is longer than the %d bytes it announced", f.Kind, f.Job, cap(msg)))
		}
		if err := r.readPayload(f, msg[len(msg):len(msg)+n]); err != nil {
			return Frame{}, err
		}
		msg = msg[:len(msg)+n]
		if f.More {
			if r.parts == nil {
				r.parts = make(map[partKey][]byte)
			}
			r.parts[key] = msg
			continue
		}
		delete(r.parts, key)
		r.held -= cap(msg)
		if len(msg) != cap(msg) {
			return Frame{}, protoErr("read message", fmt.Errorf("%s message of job %d has %d of the %d bytes it announced", f.Kind, f.Job, len(msg), cap(msg)))
		}
		f.Payload = msg
		return f, nil
	}
}

// startMessage reads the size a split message's first frame announces,
// checks it against the limits and returns the message's buffer, and how
// much of the frame's payload is left to read into it.
func (r *Reader) startMessage(f Frame, n int) ([]byte, int, error) {
	if n < sizePrefixLen {
		return nil, 0, protoErr("read message", fmt.Errorf("first frame of a split %s message of job %d has no size", f.Kind, f.Job))
	}
	var sz [sizePrefixLen]byte
	if err := r.readPayload(f, sz[:]); err != nil {
		return nil, 0, err
	}
	size := binary.BigEndian.Uint64(sz[:])
	if size > uint64(r.lim.maxMessage()) {
		return nil, 0, protoErr("read message", fmt.Errorf("%w: %s message of job %d announces %d bytes (limit %d)", ErrMessageTooLarge, f.Kind, f.Job, size, r.lim.maxMessage()))
	}
	if r.held+int(size) > r.lim.maxPartial() {
		return nil, 0, protoErr("read message", fmt.Errorf("%w: partial messages would exceed %d bytes", ErrMessageTooLarge, r.lim.maxPartial()))
	}
	r.held += int(size)
	return make([]byte, 0, size), n - sizePrefixLen, nil
}

func (r *Reader) drop(job uint32) {
	for k, v := range r.parts {
		if k.job == job {
			r.held -= cap(v)
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
	err := w.writeLocked(f, len(f.Payload), f.Payload)
	w.mu.Unlock()
	return err
}

// writeLocked writes a frame with f's header and a payload of n bytes made
// of pieces, and flushes when no other writer is waiting. w.mu is held.
func (w *Writer) writeLocked(f Frame, n int, pieces ...[]byte) error {
	if w.err == nil {
		var hdr [HeaderLen]byte
		putHeader(hdr[:], f, n)
		w.w.Write(hdr[:])
		for _, p := range pieces {
			if _, w.err = w.w.Write(p); w.err != nil {
				break
			}
		}
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

// Hold delays flushing: frames written until the matching Release stay in
// the buffer (unless it fills), so that a writer who knows more frames are
// coming sends them in one write. Every Hold must be followed by exactly
// one Release.
func (w *Writer) Hold() { w.waiting.Add(1) }

// Release ends a Hold, flushing if no other writer is waiting or holding.
func (w *Writer) Release() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.releaseLocked()
	return w.err
}

// WriteMessage writes the concatenation of parts as one message of kind k
// for job, split into frames of at most ChunkSize. The parts are written as
// they are, never joined, so a large payload is not copied. While a message
// is split, other messages of the same job and kind wait for it, so the
// reader never mixes two of them.
func (w *Writer) WriteMessage(k Kind, job uint32, parts ...[]byte) error {
	_, err := w.writeMessage(nil, k, job, parts)
	return err
}

// ErrStopped is returned by WriteMessageStop when it stopped before the
// whole message was written.
var ErrStopped = errors.New("wire: message stopped before its end")

// WriteMessageStop is WriteMessage, except that a message split into
// frames stops at the next frame once stop is closed, with ErrStopped:
// started then reports whether any of its frames had been written (the
// reader holds a partial message, which only the end of the stream, or of
// the reading process, drops). A message that fits in one frame is written
// whole.
func (w *Writer) WriteMessageStop(stop <-chan struct{}, k Kind, job uint32, parts ...[]byte) (started bool, err error) {
	return w.writeMessage(stop, k, job, parts)
}

func (w *Writer) writeMessage(stop <-chan struct{}, k Kind, job uint32, parts [][]byte) (started bool, err error) {
	size := 0
	for _, p := range parts {
		size += len(p)
	}
	key := partKey{job, k}
	for {
		w.waiting.Add(1)
		w.mu.Lock()
		wait, busy := w.big[key]
		if !busy {
			if size <= ChunkSize {
				err := w.writeLocked(Frame{Kind: k, Job: job}, size, parts...)
				w.mu.Unlock()
				return true, err
			}
			break
		}
		w.releaseLocked()
		w.mu.Unlock()
		select {
		case <-wait:
		case <-stop:
			return false, ErrStopped
		}
	}
	// A split message: mark it in flight, then write chunk by chunk,
	// letting other frames in between. The first frame starts with the
	// message's size.
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
	parts = append([][]byte(nil), parts...) // consumed below; the caller's stays whole
	var sz [sizePrefixLen]byte
	binary.BigEndian.PutUint64(sz[:], uint64(size))
	var pieces [][]byte
	first := true
	for size > 0 {
		select {
		case <-stop:
			return started, ErrStopped
		default:
		}
		room := ChunkSize
		pieces = pieces[:0]
		if first {
			pieces = append(pieces, sz[:])
			room -= sizePrefixLen
		}
		n := 0
		for n < room && len(parts) > 0 {
			p := parts[0]
			take := min(len(p), room-n)
			if take > 0 {
				pieces = append(pieces, p[:take])
			}
			n += take
			if take == len(p) {
				parts = parts[1:]
			} else {
				parts[0] = p[take:]
			}
		}
		size -= n
		if first {
			n += sizePrefixLen
			first = false
		}
		w.waiting.Add(1)
		w.mu.Lock()
		err := w.writeLocked(Frame{Kind: k, Job: job, More: size > 0}, n, pieces...)
		w.mu.Unlock()
		started = true
		if err != nil {
			return started, err
		}
	}
	return started, nil
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

// AppendHeader appends the header of f, for a payload of len(f.Payload)
// bytes written separately, to dst.
func AppendHeader(dst []byte, f Frame) []byte {
	var hdr [HeaderLen]byte
	putHeader(hdr[:], f, len(f.Payload))
	return append(dst, hdr[:]...)
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
