// Package wire is toworker's protocol between the master, the agent's boss
// and its workers: length-prefixed frames carrying CBOR messages.
//
// The full specification is in docs/protocol.md. In short, a frame is
//
//	length uint32 (big endian, payload bytes only)
//	kind   uint8  (high bit set: more frames of this message follow)
//	job    uint32 (big endian; 0 for connection-level messages)
//	payload [length]byte
//
// A message larger than ChunkSize travels as several frames of the same kind
// and job, every one but the last with the More bit, the first starting with
// the message's size, so that the frames of
// other jobs interleave with it and one big payload cannot stall the output or
// callbacks of the others. Output frames (Stdout, Stderr) are raw bytes; every
// other kind carries one CBOR-encoded message of the matching Go type.
package wire

import (
	"errors"
	"fmt"
)

// Version is the protocol version both sides announce in their hello.
// History: 1 — first version; 2 — a split message's first frame announces
// its size, and the data of a call or result follows its CBOR header
// instead of being a field of it.
const Version = 2

// HeaderLen is the size of a frame header.
const HeaderLen = 9

// Size limits. A frame whose length exceeds MaxFrame is a protocol error
// detected before any allocation; a message assembled from more frames than
// Limits.MaxMessage allows is likewise refused.
const (
	// ChunkSize is the largest payload a writer puts in one frame.
	ChunkSize = 256 << 10
	// MaxFrame is the largest frame payload a reader accepts.
	MaxFrame = 1 << 20
	// DefaultMaxMessage is the default cap on one assembled message.
	DefaultMaxMessage = 256 << 20
	// sizePrefixLen is the size of the uint64 (big endian) that starts the
	// payload of a split message's first frame: the whole message's size.
	sizePrefixLen = 8
)

// Kind says what a frame carries.
type Kind uint8

// moreBit marks a frame that is followed by more frames of the same message.
const moreBit = 0x80

// Frame kinds. "m→a" is master to agent (boss, then worker); "a→m" the other
// way.
const (
	KindHello         Kind = 1  // both ways, job 0: Hello
	KindCall          Kind = 2  // m→a: Call; opens job J
	KindStdout        Kind = 3  // a→m: raw bytes of job J's fd 1
	KindStderr        Kind = 4  // a→m: raw bytes of job J's fd 2
	KindCallback      Kind = 5  // a→m: CallbackRequest from job J
	KindCallbackReply Kind = 6  // m→a: CallbackReply to job J
	KindLog           Kind = 7  // a→m: LogRecord from job J
	KindResult        Kind = 8  // a→m: Result; closes job J
	KindCancel        Kind = 9  // m→a: Cancel job J (kill its worker and children)
	KindPing          Kind = 10 // both ways, job 0: Ping
	KindPong          Kind = 11 // both ways, job 0: Ping echoed
	KindBye           Kind = 12 // both ways, job 0: Bye; the sender stops
	KindAbort         Kind = 13 // a→m: drop any partial message of job J (its sender died mid-message)
	kindMax           Kind = 13
)

var kindNames = [...]string{
	KindHello: "hello", KindCall: "call", KindStdout: "stdout", KindStderr: "stderr",
	KindCallback: "callback", KindCallbackReply: "callback-reply", KindLog: "log",
	KindResult: "result", KindCancel: "cancel", KindPing: "ping", KindPong: "pong",
	KindBye: "bye", KindAbort: "abort",
}

func (k Kind) String() string {
	if k >= 1 && k <= kindMax {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Valid reports whether k is a kind this version knows.
func (k Kind) Valid() bool { return k >= 1 && k <= kindMax }

// Raw reports whether frames of kind k carry raw bytes rather than CBOR.
func (k Kind) Raw() bool { return k == KindStdout || k == KindStderr }

// Errors returned by readers. Each wraps into a *ProtocolError.
var (
	ErrFrameTooLarge   = errors.New("frame too large")
	ErrMessageTooLarge = errors.New("message too large")
	ErrUnknownKind     = errors.New("unknown frame kind")
	ErrVersion         = errors.New("protocol version mismatch")
)

// ProtocolError is a malformed or hostile input on a connection. The
// connection cannot be trusted after one and is closed.
type ProtocolError struct {
	Op  string // what was being read, e.g. "read frame"
	Err error
}

func (e *ProtocolError) Error() string { return "wire: " + e.Op + ": " + e.Err.Error() }
func (e *ProtocolError) Unwrap() error { return e.Err }

func protoErr(op string, err error) error { return &ProtocolError{Op: op, Err: err} }

// Text lines that frame the binary stream while the agent starts. The master
// first sends MasterPreamble (with the byte count of the frames that follow
// it before the agent answers); the boss answers AgentMarker on a line of its
// own before its first frame. Anything the remote login shell prints before
// that line is not part of the protocol and is skipped by the master.
const (
	MasterPreamble    = "toworker-master"
	AgentMarker       = "toworker-agent v1"
	AgentMarkerPrefix = "toworker-agent v"
	NeedPrefix        = "toworker-need "
	FailPrefix        = "toworker-fail "
)

// EnvFrames is the environment variable that may carry, base64-encoded,
// the same frames the master writes after its preamble (its hello and first
// call), so that the agent can start on them before the session's stdin
// delivers them. The agent then skips their copy on stdin. MaxEnvFrames
// bounds the frames sent that way.
const (
	EnvFrames    = "LC_TOWORKER"
	MaxEnvFrames = 16 << 10
)

// EnvGOMAXPROCS is the environment variable in which the bootstrap keeps
// the login environment's GOMAXPROCS while it starts the boss with
// GOMAXPROCS=1 (the Go runtime then starts with one processor, which is
// all the boss uses: fewer threads and page faults): "=" and the value
// when it was set, empty when not. The boss puts it back before it starts
// any worker or command.
const EnvGOMAXPROCS = "TOWORKER_GOMAXPROCS"
