package faultssh

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/toworker/toworker/internal/wire"
)

// Agent is a fake toworker agent on a session channel, for scripting a
// malicious or broken host. AcceptAgent plays the bootstrap honestly (the
// master cannot tell it from a real cached agent); after that the test
// decides what the "host" sends, frame by frame or byte by byte.
type Agent struct {
	// Master is the hello the master sent.
	Master wire.Hello

	r  *wire.Reader
	w  io.Writer
	mu sync.Mutex // one writer at a time
}

// AcceptAgent reads the master's preamble line and the frames that follow it
// (its hello), prints the agent's marker line and answers with hello (Role
// "boss" and Version wire.Version when left empty; a test that wants a
// wrong version sets it).
func AcceptAgent(ch io.ReadWriter, hello wire.Hello) (*Agent, error) {
	br := bufio.NewReaderSize(ch, 64<<10)
	line, err := br.ReadString('\n')
	if err != nil {
		return nil, fmt.Errorf("faultssh: read master preamble: %w", err)
	}
	var version, n int
	if _, err := fmt.Sscanf(strings.TrimSpace(line), wire.MasterPreamble+" %d %d", &version, &n); err != nil {
		return nil, fmt.Errorf("faultssh: bad master preamble %q: %v", line, err)
	}
	if n < 0 || n > 16<<20 {
		return nil, fmt.Errorf("faultssh: master preamble claims %d bytes", n)
	}
	// The block after the preamble holds the master's hello and maybe its
	// first calls; later frames come straight from the channel.
	block := make([]byte, n)
	if _, err := io.ReadFull(br, block); err != nil {
		return nil, fmt.Errorf("faultssh: read master's first frames: %w", err)
	}
	a := &Agent{r: wire.NewReader(io.MultiReader(bytes.NewReader(block), br), wire.Limits{}), w: ch}
	f, err := a.r.ReadMessage()
	if err != nil {
		return nil, fmt.Errorf("faultssh: read master hello: %w", err)
	}
	v, err := wire.Decode(f.Kind, f.Payload)
	if h, ok := v.(*wire.Hello); err == nil && ok {
		a.Master = *h
	} else {
		return nil, fmt.Errorf("faultssh: master's first frame is %s, not hello (%v)", f.Kind, err)
	}
	if hello.Role == "" {
		hello.Role = "boss"
	}
	if hello.Version == 0 {
		hello.Version = wire.Version
	}
	if err := a.WriteRaw([]byte(wire.AgentMarker + "\n")); err != nil {
		return nil, err
	}
	if err := a.WriteValue(wire.KindHello, 0, &hello); err != nil {
		return nil, err
	}
	return a, nil
}

// WriteRaw writes b as is: half a frame, a lying header, anything.
func (a *Agent) WriteRaw(b []byte) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, err := a.w.Write(b)
	return err
}

// WriteFrame writes one well-formed frame (the payload may be anything).
func (a *Agent) WriteFrame(f wire.Frame) error {
	return a.WriteRaw(wire.AppendFrame(nil, f))
}

// WriteValue encodes v as a message payload (for a Call or Result, its CBOR
// then its data) and writes it as one frame of kind k for job.
func (a *Agent) WriteValue(k wire.Kind, job uint32, v any) error {
	b, err := wire.MarshalMessage(v)
	if err != nil {
		return err
	}
	return a.WriteFrame(wire.Frame{Kind: k, Job: job, Payload: b})
}

// Next reads the master's next message, answering pings on the way. It
// returns the frame and its decoded value (nil for kinds without a CBOR
// body).
func (a *Agent) Next() (wire.Frame, any, error) {
	for {
		f, err := a.r.ReadMessage()
		if err != nil {
			return f, nil, err
		}
		if f.Kind == wire.KindPing {
			if err := a.WriteFrame(wire.Frame{Kind: wire.KindPong, Payload: f.Payload}); err != nil {
				return f, nil, err
			}
			continue
		}
		v, err := wire.Decode(f.Kind, f.Payload)
		if err != nil {
			return f, nil, err
		}
		return f, v, nil
	}
}

// NextCall reads until the master's next call and returns its job id.
// Other messages (callback replies, cancels) are returned to the caller
// through skip, which may be nil.
func (a *Agent) NextCall(skip func(wire.Frame, any)) (uint32, *wire.Call, error) {
	for {
		f, v, err := a.Next()
		if err != nil {
			return 0, nil, err
		}
		if c, ok := v.(*wire.Call); ok {
			return f.Job, c, nil
		}
		if f.Kind == wire.KindBye {
			return 0, nil, io.EOF
		}
		if skip != nil {
			skip(f, v)
		}
	}
}
