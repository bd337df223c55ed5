package sshmux

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
)

// msg returns a message (length and payload) whose payload is the
// concatenation of fields: uint32, string or []byte (raw bytes).
func msg(fields ...any) []byte {
	var p []byte
	for _, f := range fields {
		switch v := f.(type) {
		case uint32:
			p = binary.BigEndian.AppendUint32(p, v)
		case int:
			p = binary.BigEndian.AppendUint32(p, uint32(v))
		case string:
			p = appendString(p, v)
		case []byte:
			p = append(p, v...)
		default:
			panic("msg: bad field type")
		}
	}
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(p))), p...)
}

// request is a MUX_C_NEW_SESSION message as the master decodes it.
type request struct {
	id                             uint32
	reserved                       string
	tty, x11, agent, subsys, escch uint32
	term, cmd                      string
	env                            []string
}

// parseRequest decodes the payload of a MUX_C_NEW_SESSION message as
// mux.c's mux_master_process_new_session does.
func parseRequest(m []byte) (request, error) {
	var r request
	p := payload(m)
	typ, ok := p.uint32()
	if !ok || typ != msgNewSession {
		return r, errors.New("not a new-session request")
	}
	var oks [10]bool
	r.id, oks[0] = p.uint32()
	r.reserved, oks[1] = p.string()
	r.tty, oks[2] = p.uint32()
	r.x11, oks[3] = p.uint32()
	r.agent, oks[4] = p.uint32()
	r.subsys, oks[5] = p.uint32()
	r.escch, oks[6] = p.uint32()
	r.term, oks[7] = p.string()
	r.cmd, oks[8] = p.string()
	oks[9] = true
	if slices.Contains(oks[:], false) {
		return r, errors.New("malformed request")
	}
	for len(p) > 0 {
		e, ok := p.string()
		if !ok {
			return r, errors.New("malformed environment entry")
		}
		r.env = append(r.env, e)
	}
	return r, nil
}

// FuzzReadMessage feeds arbitrary bytes from a master to the decoder: the
// hello first, then replies, as a Session reads them. It must never panic,
// nor read a message outside the length bounds.
func FuzzReadMessage(f *testing.F) {
	hello := msg(msgHello, protocolVersion)
	opened := msg(msgSessionOpened, requestID, 5)
	for _, seed := range [][]byte{
		nil,
		hello,
		slices.Concat(hello, opened, msg(msgExitMessage, 5, 3)),
		slices.Concat(msg(msgHello, protocolVersion, "ext", "v"), opened, msg(msgTTYAllocFail, 5), msg(msgExitMessage, 5, 0)),
		slices.Concat(hello, msg(msgFailure, requestID, "Session open refused by peer")),
		slices.Concat(hello, msg(msgPermissionDenied, requestID, "Permission denied")),
		msg(msgHello, 3),
		slices.Concat(hello, opened, msg(msgExitMessage, 5, 3), msg(msgExitMessage, 5, 3)),
		slices.Concat(hello, msg(0x12345678)),
		slices.Concat(hello, []byte{0, 0x98, 0x96, 0x7f}),
		{0, 0, 0, 2, 1},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		m, err := readMessage(r)
		if err != nil {
			return
		}
		if len(m) < 4 || len(m) > maxMessage {
			t.Fatalf("readMessage returned %d bytes", len(m))
		}
		if err := parseHello(m); err != nil {
			return
		}
		var st replies
		for {
			m, err := readMessage(r)
			if err != nil {
				if err != io.EOF {
					var pe *protocolError
					if !errors.As(err, &pe) {
						t.Fatalf("readMessage from memory: %v", err)
					}
				}
				return
			}
			answered, exited := st.answered, st.exited
			if err := st.handle(m); err != nil {
				if err.Error() == "" {
					t.Fatal("empty error")
				}
				return
			}
			if answered && !st.answered || exited && !st.exited {
				t.Fatal("state went back")
			}
			if st.exited && (!st.answered || st.refused != nil) {
				t.Fatal("exit status without an opened session")
			}
			if st.refused != nil {
				_ = st.refused.Error()
				return // a Session stops reading here
			}
		}
	})
}

// FuzzNewSessionRequest checks that a request decodes, as the master
// decodes it, to what was asked for, or is rejected.
func FuzzNewSessionRequest(f *testing.F) {
	f.Add("echo hi", "LC_A=1", "B=")
	f.Add("", "", "")
	f.Add("a\x00b", "X=\x00", "Y")
	f.Fuzz(func(t *testing.T, cmd, e1, e2 string) {
		env := []string{e1, e2}
		b, err := newSessionRequest(cmd, env)
		if err != nil {
			if !strings.Contains(cmd+e1+e2, "\x00") {
				t.Fatalf("newSessionRequest(%q, %q): %v", cmd, env, err)
			}
			return
		}
		m, err := readMessage(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if len(m)+4 != len(b) {
			t.Fatalf("length field says %d, message is %d bytes", len(m), len(b)-4)
		}
		r, err := parseRequest(m)
		if err != nil {
			t.Fatal(err)
		}
		want := request{id: requestID, escch: noEscapeChar, cmd: cmd, env: env}
		if r.id != want.id || r.reserved != "" || r.tty != 0 || r.x11 != 0 || r.agent != 0 || r.subsys != 0 ||
			r.escch != want.escch || r.term != "" || r.cmd != cmd || !slices.Equal(r.env, env) {
			t.Fatalf("decoded %+v, want %+v", r, want)
		}
	})
}
