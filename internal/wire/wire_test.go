package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/fxamacker/cbor/v2"
)

// every message type, for round trips.
var samples = []struct {
	kind Kind
	v    any
}{
	{KindHello, &Hello{Version: Version, Role: "master", MinWarm: 2, MaxJobsPerWorker: 10, Init: "init", PingSeconds: 5, Host: "web1"}},
	{KindCall, &Call{Func: "f", Data: cbor.RawMessage{0x63, 'a', 'b', 'c'}, Chdir: "/srv", Desc: "d", TimeoutMillis: 1500}},
	{KindCallback, &CallbackRequest{Seq: 7, Name: "progress", Data: cbor.RawMessage{0x01}}},
	{KindCallbackReply, &CallbackReply{Seq: 7, Err: &Error{Kind: ErrKindFunc, Message: "no"}}},
	{KindLog, &LogRecord{TimeUnixNano: 1, Level: 4, Message: "m", Attrs: []string{"k", "v"}}},
	{KindResult, &Result{Data: cbor.RawMessage{0xf6}, WorkerPID: 42, WorkerJobs: 3}},
	{KindResult, &Result{Err: &Error{Kind: ErrKindPanic, Message: "boom", Stack: "goroutine 1", ExitCode: 2, Signal: "killed"}}},
	{KindCancel, &Cancel{Reason: "timeout"}},
	{KindPing, &Ping{N: 99}},
	{KindBye, &Bye{Reason: "done"}},
}

func TestMessageRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	for i, s := range samples {
		if err := w.WriteValue(s.kind, uint32(i), s.v); err != nil {
			t.Fatal(err)
		}
	}
	r := NewReader(&buf, Limits{})
	for i, s := range samples {
		f, err := r.ReadMessage()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if f.Kind != s.kind || f.Job != uint32(i) {
			t.Fatalf("message %d: kind %s job %d", i, f.Kind, f.Job)
		}
		v, err := Decode(f.Kind, f.Payload)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(v, s.v) {
			t.Errorf("message %d: got %+v, want %+v", i, v, s.v)
		}
	}
	if _, err := r.ReadMessage(); err != io.EOF {
		t.Fatalf("after last message: %v, want io.EOF", err)
	}
}

// Big messages are split, and other jobs' frames pass between the chunks.
func TestChunkedMessagesInterleave(t *testing.T) {
	pr, pw := io.Pipe()
	w := NewWriter(pw)
	big := bytes.Repeat([]byte("x"), 5*ChunkSize+17)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); w.WriteMessage(KindResult, 1, big) }()
	go func() {
		defer wg.Done()
		for range 50 {
			w.WriteFrame(Frame{Kind: KindStdout, Job: 2, Payload: []byte("line\n")})
		}
	}()
	go func() { wg.Wait(); pw.Close() }()
	r := NewReader(pr, Limits{})
	var gotBig []byte
	lines := 0
	for {
		f, err := r.ReadMessage()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch f.Job {
		case 1:
			gotBig = f.Payload
		case 2:
			lines++
		}
	}
	if !bytes.Equal(gotBig, big) || lines != 50 {
		t.Fatalf("big %d bytes (want %d), lines %d", len(gotBig), len(big), lines)
	}
}

func header(n uint32, k byte, job uint32) []byte {
	var h [HeaderLen]byte
	binary.BigEndian.PutUint32(h[0:4], n)
	h[4] = k
	binary.BigEndian.PutUint32(h[5:9], job)
	return h[:]
}

func TestHostileFrames(t *testing.T) {
	deep := bytes.Repeat([]byte{0x81}, 10000) // array of array of … 10,000 deep
	deep = append(deep, 0x00)
	manyKeys := []byte{0xba, 0x00, 0x0f, 0x42, 0x40} // map claiming 1,000,000 pairs
	tests := []struct {
		name  string
		input []byte
		want  error  // errors.Is target, or nil to only require a *ProtocolError
		text  string // substring of the error
	}{
		{"4 GiB frame", header(0xffffffff, byte(KindResult), 1), ErrFrameTooLarge, "4294967295 bytes"},
		{"unknown kind", header(0, 99, 1), ErrUnknownKind, "99"},
		{"truncated header", header(5, byte(KindCall), 1)[:4], io.ErrUnexpectedEOF, "header"},
		{"truncated payload", append(header(5, byte(KindCall), 1), 1, 2), io.ErrUnexpectedEOF, "payload"},
		{"more bit on output", append(header(1, byte(KindStdout)|moreBit, 1), 'x'), nil, "more bit"},
		{"message over the cap", chunks(KindResult, 3, 300<<10), ErrMessageTooLarge, "announces 1228800 bytes"},
		{"split message without its size", append(header(3, byte(KindResult)|moreBit, 1), 1, 2, 3), nil, "has no size"},
		{"split message longer than announced", append(binary.BigEndian.AppendUint64(header(12, byte(KindResult)|moreBit, 1), 3), 1, 2, 3, 4), nil, "longer than the 3 bytes"},
		{"split message shorter than announced", append(append(binary.BigEndian.AppendUint64(header(10, byte(KindResult)|moreBit, 1), 5), 1, 2), header(0, byte(KindResult), 1)...), nil, "has 2 of the 5 bytes"},
		{"split messages over the partial cap", announce(500<<10, KindCall, KindLog, KindCallback), ErrMessageTooLarge, "partial messages"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewReader(bytes.NewReader(tt.input), Limits{MaxMessage: 512 << 10})
			_, err := r.ReadMessage()
			var pe *ProtocolError
			if !errors.As(err, &pe) {
				t.Fatalf("err = %v, want *ProtocolError", err)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.text) {
				t.Errorf("err = %q, want it to mention %q", err, tt.text)
			}
		})
	}
	for name, body := range map[string][]byte{"nested 10,000 deep": deep, "a million keys": manyKeys} {
		t.Run(name, func(t *testing.T) {
			var v any
			if err := Unmarshal(body, &v); err == nil {
				t.Fatal("decoded without error")
			}
			if _, err := Decode(KindCall, body); err == nil {
				t.Fatal("Decode without error")
			}
		})
	}
}

// chunks builds a split message of job 1: n More frames of size bytes of
// data each followed by a last one, the first announcing the total.
func chunks(k Kind, n, size int) []byte {
	var out []byte
	for i := 0; i <= n; i++ {
		kb := byte(k)
		if i < n {
			kb |= moreBit
		}
		if i == 0 {
			out = append(out, header(uint32(sizePrefixLen+size), kb, 1)...)
			out = binary.BigEndian.AppendUint64(out, uint64((n+1)*size))
		} else {
			out = append(out, header(uint32(size), kb, 1)...)
		}
		out = append(out, make([]byte, size)...)
	}
	return out
}

// announce starts a split message of size bytes of each kind, for job 1,
// sending only the size.
func announce(size uint64, kinds ...Kind) []byte {
	var out []byte
	for _, k := range kinds {
		out = binary.BigEndian.AppendUint64(append(out, header(sizePrefixLen, byte(k)|moreBit, 1)...), size)
	}
	return out
}

func TestAbortDropsPartial(t *testing.T) {
	var in []byte
	in = append(in, header(sizePrefixLen+3, byte(KindResult)|moreBit, 4)...)
	in = binary.BigEndian.AppendUint64(in, 10)
	in = append(in, 1, 2, 3)
	in = append(in, header(0, byte(KindAbort), 4)...)
	res, _ := Marshal(&Result{WorkerPID: 1})
	in = AppendFrame(in, Frame{Kind: KindResult, Job: 4, Payload: res})
	r := NewReader(bytes.NewReader(in), Limits{})
	f, err := r.ReadMessage()
	if err != nil || !bytes.Equal(f.Payload, res) {
		t.Fatalf("after abort: %v, payload %x want %x", err, f.Payload, res)
	}
}

func TestWriterFlushesEveryWrite(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	w.WriteFrame(Frame{Kind: KindPing, Payload: []byte{1}})
	if buf.Len() != HeaderLen+1 {
		t.Fatalf("after one frame the stream holds %d bytes, want %d (not flushed)", buf.Len(), HeaderLen+1)
	}
}

func FuzzReadMessage(f *testing.F) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	for i, s := range samples {
		w.WriteValue(s.kind, uint32(i), s.v)
	}
	f.Add(buf.Bytes())
	f.Add(header(0xffffffff, byte(KindResult), 1))
	f.Add(chunks(KindCall, 2, 10))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data), Limits{MaxMessage: 1 << 20})
		for range 100 {
			f, err := r.ReadMessage()
			if err != nil {
				return
			}
			if len(f.Payload) > 1<<20 {
				t.Fatalf("message of %d bytes passed a 1 MiB cap", len(f.Payload))
			}
			if f.Kind.Raw() {
				continue
			}
			v, err := Decode(f.Kind, f.Payload)
			if err != nil {
				continue
			}
			// Whatever decodes re-encodes and decodes to the same value.
			b, err := MarshalMessage(v)
			if err != nil {
				t.Fatalf("re-encode %T: %v", v, err)
			}
			v2, err := Decode(f.Kind, b)
			if err != nil || !reflect.DeepEqual(v, v2) {
				t.Fatalf("round trip of %T: %v\n%+v\n%+v", v, err, v, v2)
			}
		}
	})
}

func BenchmarkWriteReadCall(b *testing.B) {
	call, _ := Marshal(&Call{Func: "noop", Data: cbor.RawMessage{0xa0}})
	var buf bytes.Buffer
	w := NewWriter(&buf)
	r := NewReader(&buf, Limits{})
	b.ReportAllocs()
	for b.Loop() {
		w.WriteMessage(KindCall, 1, call)
		f, _ := r.ReadMessage()
		Decode(f.Kind, f.Payload)
	}
}

// countingWriter counts the writes that reach it.
type countingWriter struct {
	bytes.Buffer
	writes int
}

func (c *countingWriter) Write(p []byte) (int, error) { c.writes++; return c.Buffer.Write(p) }

func TestWriterHoldBatchesFrames(t *testing.T) {
	var cw countingWriter
	w := NewWriter(&cw)
	w.Hold()
	for i := range 3 {
		if err := w.WriteFrame(Frame{Kind: KindStdout, Job: uint32(i + 1), Payload: []byte("line\n")}); err != nil {
			t.Fatal(err)
		}
	}
	if cw.writes != 0 {
		t.Fatalf("%d writes while held, want 0", cw.writes)
	}
	if err := w.Release(); err != nil {
		t.Fatal(err)
	}
	if cw.writes != 1 {
		t.Fatalf("%d writes after Release, want 1 for the three frames", cw.writes)
	}
	// Not held: each frame is flushed at once.
	w.WriteFrame(Frame{Kind: KindStdout, Job: 4, Payload: []byte("x")})
	if cw.writes != 2 {
		t.Fatalf("%d writes, want 2: an unheld frame is flushed", cw.writes)
	}
	r := NewReader(&cw.Buffer, Limits{})
	for i := range 4 {
		if _, err := r.ReadFrame(); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
	}
}

func TestReaderFrameBuffered(t *testing.T) {
	var b bytes.Buffer
	w := NewWriter(&b)
	w.WriteFrame(Frame{Kind: KindStdout, Job: 1, Payload: []byte("one")})
	w.WriteFrame(Frame{Kind: KindStdout, Job: 2, Payload: []byte("two")})
	whole := b.Bytes()
	// The second frame cut short by one byte.
	r := NewReader(bytes.NewReader(whole[:len(whole)-1]), Limits{})
	if r.FrameBuffered() {
		t.Error("FrameBuffered before anything was read")
	}
	if _, err := r.ReadFrame(); err != nil {
		t.Fatal(err)
	}
	if r.FrameBuffered() {
		t.Error("FrameBuffered with the next frame incomplete")
	}
	r = NewReader(bytes.NewReader(whole), Limits{})
	if _, err := r.ReadFrame(); err != nil {
		t.Fatal(err)
	}
	if !r.FrameBuffered() {
		t.Error("not FrameBuffered with the next frame whole in the buffer")
	}
}

// stopAfterWrites is a writer that closes stop once it has taken n writes.
type stopAfterWrites struct {
	bytes.Buffer
	n    int
	stop chan struct{}
}

func (s *stopAfterWrites) Write(p []byte) (int, error) {
	if s.n--; s.n == 0 {
		close(s.stop)
	}
	return s.Buffer.Write(p)
}

func TestWriteMessageStop(t *testing.T) {
	big := bytes.Repeat([]byte{7}, 3*ChunkSize)
	for _, tc := range []struct {
		name        string
		data        []byte
		stopAfter   int // writes to the stream before stop closes; 0: closed at once
		wantStarted bool
		wantErr     error
		wantFrames  int
	}{
		{"small, stop closed", []byte("x"), 0, true, nil, 1},
		{"split, stop closed before", big, 0, false, ErrStopped, 0},
		{"split, stopped after the first frame", big, 1, true, ErrStopped, 1},
		{"split, never stopped", big, 100, true, nil, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := &stopAfterWrites{n: tc.stopAfter, stop: make(chan struct{})}
			if tc.stopAfter == 0 {
				close(out.stop)
			}
			// No buffer to speak of: every frame reaches out by itself.
			w := NewWriterSize(out, 16)
			started, err := w.WriteMessageStop(out.stop, KindCall, 3, tc.data)
			if started != tc.wantStarted || !errors.Is(err, tc.wantErr) {
				t.Fatalf("started %v, err %v; want %v, %v", started, err, tc.wantStarted, tc.wantErr)
			}
			r := NewReader(bytes.NewReader(out.Bytes()), Limits{})
			frames := 0
			var last Frame
			for {
				f, err := r.ReadFrame()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				frames++
				last = f
			}
			if frames != tc.wantFrames {
				t.Errorf("%d frames written, want %d", frames, tc.wantFrames)
			}
			if tc.wantErr != nil && frames > 0 && !last.More {
				t.Errorf("the last frame of a stopped message says it is the end")
			}
			// The writer takes the next message of the same job and kind.
			if err := w.WriteMessage(KindCall, 3, []byte("next")); err != nil {
				t.Errorf("after the stop: %v", err)
			}
		})
	}
}
