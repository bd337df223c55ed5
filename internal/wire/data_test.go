package wire

import (
	"bytes"
	"crypto/rand"
	"io"
	"testing"
)

// A large []byte travels as a header plus the caller's own slice, and comes
// out as a slice of the received message: no copy on either side, same
// bytes as the CBOR library would give.
func TestDataBigBytesPassThrough(t *testing.T) {
	for _, n := range []int{0, 10, bigData - 1, bigData, 70000, 3*ChunkSize + 5} {
		in := make([]byte, n)
		rand.Read(in)
		head, tail, err := EncodeData(in)
		if err != nil {
			t.Fatal(err)
		}
		joined := append(append([]byte(nil), head...), tail...)
		want, _ := Marshal(in)
		if !bytes.Equal(joined, want) {
			t.Fatalf("%d bytes: encoding differs from the CBOR library's", n)
		}
		if n >= bigData && (len(tail) != n || &tail[0] != &in[0]) {
			t.Fatalf("%d bytes: the tail is not the input slice itself", n)
		}

		var buf bytes.Buffer
		w := NewWriter(&buf)
		if err := w.WriteValue(KindResult, 9, &Result{Data: head, DataTail: tail, WorkerPID: 3}); err != nil {
			t.Fatal(err)
		}
		f, err := NewReader(&buf, Limits{}).ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		v, err := Decode(f.Kind, f.Payload)
		if err != nil {
			t.Fatal(err)
		}
		res := v.(*Result)
		if res.WorkerPID != 3 {
			t.Fatalf("%d bytes: WorkerPID %d", n, res.WorkerPID)
		}
		var out []byte
		if err := DecodeData(res.Data, &out); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out, in) {
			t.Fatalf("%d bytes: decoded %d bytes that differ", n, len(out))
		}
		if n >= bigData && &out[0] != &f.Payload[len(f.Payload)-n] {
			t.Fatalf("%d bytes: output copied out of the message", n)
		}
	}
}

// DecodeData agrees with Unmarshal on everything that is not a plain large
// byte string decoded into a []byte.
func TestDecodeDataFallsBack(t *testing.T) {
	big := make([]byte, bigData+1)
	indef := append([]byte{0x5f}, append(append([]byte{0x59, 0x10, 0x01}, big...), 0xff)...) // indefinite-length byte string
	text, _ := Marshal(string(big))
	trailing := append(append([]byte{0x59, 0x10, 0x01}, big...), 0x00)
	for name, data := range map[string][]byte{"indefinite": indef, "text string": text, "trailing byte": trailing} {
		var got, want []byte
		gotErr := DecodeData(data, &got)
		wantErr := decMode.Unmarshal(data, &want)
		if (gotErr == nil) != (wantErr == nil) || !bytes.Equal(got, want) {
			t.Errorf("%s: DecodeData gives %d bytes, %v; Unmarshal %d bytes, %v", name, len(got), gotErr, len(want), wantErr)
		}
	}
}

// A message in several parts is split across frames without joining them,
// and arrives whole.
func TestWriteMessageParts(t *testing.T) {
	a := bytes.Repeat([]byte("a"), ChunkSize-3)
	b := bytes.Repeat([]byte("b"), 7)
	c := bytes.Repeat([]byte("c"), 2*ChunkSize)
	parts := [][]byte{a, nil, b, c}
	var buf bytes.Buffer
	if err := NewWriter(&buf).WriteMessage(KindCall, 5, parts...); err != nil {
		t.Fatal(err)
	}
	if len(parts[0]) != len(a) || len(parts[3]) != len(c) {
		t.Fatal("WriteMessage changed the caller's parts")
	}
	r := NewReader(&buf, Limits{})
	f, err := r.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Join([][]byte{a, b, c}, nil)
	if !bytes.Equal(f.Payload, want) {
		t.Fatalf("got %d bytes, want %d", len(f.Payload), len(want))
	}
	if _, err := r.ReadMessage(); err != io.EOF {
		t.Fatalf("after the message: %v", err)
	}
}

// FuzzDecodeData checks DecodeData against the CBOR library on a header
// (what the fuzzer varies) followed by pad zero bytes, so that inputs reach
// the pass-through size without the fuzzer carrying kilobytes around.
func FuzzDecodeData(f *testing.F) {
	f.Add([]byte{0x59, 0x10, 0x00}, uint16(bigData))
	f.Add([]byte{0x5b, 0, 0, 0, 0, 0, 0, 0x10, 0}, uint16(bigData))
	f.Add([]byte{0x5a, 0, 0, 0x10, 0x01}, uint16(bigData))
	f.Add([]byte{0x5f, 0x59, 0x10, 0x00}, uint16(bigData))
	f.Add([]byte{0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, uint16(0))
	f.Fuzz(func(t *testing.T, head []byte, pad uint16) {
		data := append(head, make([]byte, pad)...)
		var got, want []byte
		gotErr := DecodeData(data, &got)
		wantErr := decMode.Unmarshal(data, &want)
		if (gotErr == nil) != (wantErr == nil) {
			t.Fatalf("DecodeData error %v, Unmarshal error %v", gotErr, wantErr)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("DecodeData gives %d bytes, Unmarshal %d", len(got), len(want))
		}
	})
}

// BenchmarkWriteReadBig is a 16 MiB []byte through EncodeData, a Writer, a
// Reader and DecodeData: the allocations per round are the message buffer
// and a handful of small ones, not copies of the data.
func BenchmarkWriteReadBig(b *testing.B) {
	in := make([]byte, 16<<20)
	var buf bytes.Buffer
	w := NewWriter(&buf)
	r := NewReader(&buf, Limits{})
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		head, tail, _ := EncodeData(in)
		w.WriteValue(KindResult, 1, &Result{Data: head, DataTail: tail})
		f, _ := r.ReadMessage()
		v, _ := Decode(f.Kind, f.Payload)
		var out []byte
		DecodeData(v.(*Result).Data, &out)
		buf.Reset()
	}
}
