package wire

import (
	"fmt"

	"github.com/fxamacker/cbor/v2"
)

// Hello opens a connection in each direction. The master sends one first
// (it may send calls right after it, without waiting); the agent answers
// with its own.
type Hello struct {
	Version int    `cbor:"1,keyasint"`
	Role    string `cbor:"2,keyasint"` // "master", "boss" or "worker"
	Hash    string `cbor:"3,keyasint,omitempty"`
	OS      string `cbor:"4,keyasint,omitempty"`
	Arch    string `cbor:"5,keyasint,omitempty"`
	PID     int    `cbor:"6,keyasint,omitempty"`
	// Set by the master for the boss:
	MinWarm          int    `cbor:"7,keyasint,omitempty"` // workers to start before any job
	MaxJobsPerWorker int    `cbor:"8,keyasint,omitempty"` // recycle a worker after this many jobs; 0 = never
	Init             string `cbor:"9,keyasint,omitempty"` // registered function run once in each new worker
	PingSeconds      int    `cbor:"10,keyasint,omitempty"`
	// Set by the boss for a worker:
	LogLevel int `cbor:"11,keyasint,omitempty"`
	// Host is the name the master knows the host by (master to boss, boss
	// to worker).
	Host string `cbor:"12,keyasint,omitempty"`
	// EnvFrames, in the boss's hello, says it started on the frames of
	// the EnvFrames variable rather than stdin's.
	EnvFrames bool `cbor:"13,keyasint,omitempty"`
	// MaxWorkers, set by the master for the boss, caps its worker
	// processes; 0 means no cap (the master then sends a call only when a
	// worker can start it). With a cap, calls beyond it wait in the boss,
	// and a small one may be queued on a busy worker (pipelining).
	MaxWorkers int `cbor:"14,keyasint,omitempty"`
}

// Call asks for a registered function to run as job J.
type Call struct {
	Func string `cbor:"1,keyasint"`
	// Data is the function's input, CBOR-encoded, and DataTail the rest of
	// it when it is in two pieces (see EncodeData). On the wire the data
	// follows the Call's own CBOR encoding instead of being one of its
	// fields, so it is copied neither into the encoding nor out of it: a
	// decoded Call's Data aliases the message, and DataTail is nil.
	Data     []byte `cbor:"-"`
	DataTail []byte `cbor:"-"`
	Chdir    string `cbor:"3,keyasint,omitempty"`
	Desc     string `cbor:"4,keyasint,omitempty"`
	// TimeoutMillis, when positive, is enforced by the boss as well as the
	// master, so a job cannot outlive its timeout if the master is gone.
	TimeoutMillis int64 `cbor:"5,keyasint,omitempty"`
}

// Error kinds carried in Error.Kind.
const (
	ErrKindFunc        = "error"            // the function returned an error
	ErrKindPanic       = "panic"            // the function panicked
	ErrKindExit        = "exit"             // the worker exited during the job
	ErrKindSignal      = "signal"           // the worker was killed by a signal
	ErrKindUnknownFunc = "unknown-function" // no function of that name is registered
	ErrKindDecode      = "decode"           // the data did not decode into the input type
	ErrKindChdir       = "chdir"            // the job's directory could not be entered
	ErrKindInit        = "init"             // the worker's init function failed
	ErrKindCanceled    = "canceled"         // cancelled or timed out at the master's request
	ErrKindAgent       = "agent"            // the agent could not run the job
)

// Error is a job's failure as the agent reports it.
type Error struct {
	Kind     string `cbor:"1,keyasint"`
	Message  string `cbor:"2,keyasint"`
	Stack    string `cbor:"3,keyasint,omitempty"`
	ExitCode int    `cbor:"4,keyasint,omitempty"`
	Signal   string `cbor:"5,keyasint,omitempty"`
}

func (e *Error) Error() string { return e.Message }

// Result closes job J: its output value or its error.
type Result struct {
	// Data and DataTail are the function's output, CBOR-encoded, carried
	// as a Call's are: after the Result's own encoding.
	Data     []byte `cbor:"-"`
	DataTail []byte `cbor:"-"`
	Err      *Error `cbor:"2,keyasint,omitempty"`
	// WorkerPID is the worker that ran the job (for tests and stats).
	WorkerPID int `cbor:"3,keyasint,omitempty"`
	// WorkerJobs counts the jobs this worker has run, this one included.
	WorkerJobs int `cbor:"4,keyasint,omitempty"`
}

// CallbackRequest is a call from a running job into the master.
type CallbackRequest struct {
	Seq  uint64          `cbor:"1,keyasint"`
	Name string          `cbor:"2,keyasint"`
	Data cbor.RawMessage `cbor:"3,keyasint,omitempty"`
}

// CallbackReply answers the CallbackRequest with the same Seq.
type CallbackReply struct {
	Seq  uint64          `cbor:"1,keyasint"`
	Data cbor.RawMessage `cbor:"2,keyasint,omitempty"`
	Err  *Error          `cbor:"3,keyasint,omitempty"`
}

// LogRecord is one slog record from a job.
type LogRecord struct {
	TimeUnixNano int64    `cbor:"1,keyasint"`
	Level        int      `cbor:"2,keyasint"`
	Message      string   `cbor:"3,keyasint"`
	Attrs        []string `cbor:"4,keyasint,omitempty"` // key, value, key, value…
}

// Cancel stops job J. The boss kills the job's worker and its process group.
type Cancel struct {
	Reason string `cbor:"1,keyasint,omitempty"`
}

// Ping asks the peer for a Pong with the same N.
type Ping struct {
	N uint64 `cbor:"1,keyasint"`
}

// Bye says the sender is stopping, and why.
type Bye struct {
	Reason string `cbor:"1,keyasint,omitempty"`
}

// Decoding limits for every CBOR value read from a peer. Frames are already
// bounded in size before they reach the decoder.
var (
	decMode cbor.DecMode
	encMode cbor.EncMode
)

func init() {
	var err error
	decMode, err = cbor.DecOptions{
		MaxNestedLevels:  64,
		MaxArrayElements: 1 << 20,
		MaxMapPairs:      1 << 17,
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		IndefLength:      cbor.IndefLengthAllowed,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	encMode, err = cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
}

// Marshal encodes v as CBOR.
func Marshal(v any) ([]byte, error) { return encMode.Marshal(v) }

// Unmarshal decodes CBOR data into v under the protocol's limits.
func Unmarshal(data []byte, v any) error { return decMode.Unmarshal(data, v) }

// DecMode returns the decoding mode with the protocol's limits, for callers
// that need a cbor.Decoder.
func DecMode() cbor.DecMode { return decMode }

// Decode decodes a message payload of kind k into its Go type.
func Decode(k Kind, payload []byte) (any, error) {
	var v any
	switch k {
	case KindHello:
		v = new(Hello)
	case KindCall:
		v = new(Call)
	case KindCallback:
		v = new(CallbackRequest)
	case KindCallbackReply:
		v = new(CallbackReply)
	case KindLog:
		v = new(LogRecord)
	case KindResult:
		v = new(Result)
	case KindCancel:
		v = new(Cancel)
	case KindPing, KindPong:
		v = new(Ping)
	case KindBye:
		v = new(Bye)
	default:
		return nil, protoErr("decode", fmt.Errorf("%w %s has no CBOR body", ErrUnknownKind, k))
	}
	if k == KindCall || k == KindResult {
		// The data follows the CBOR header.
		rest, err := decMode.UnmarshalFirst(payload, v)
		if err != nil {
			return nil, protoErr("decode "+k.String(), err)
		}
		if len(rest) > 0 {
			switch m := v.(type) {
			case *Call:
				m.Data = rest
			case *Result:
				m.Data = rest
			}
		}
		return v, nil
	}
	if err := decMode.Unmarshal(payload, v); err != nil {
		return nil, protoErr("decode "+k.String(), err)
	}
	return v, nil
}

// encodeMessage encodes v as the parts of a message payload: its CBOR
// encoding, then for a Call or Result its data.
func encodeMessage(v any) ([][]byte, error) {
	b, err := encMode.Marshal(v)
	if err != nil {
		return nil, err
	}
	switch m := v.(type) {
	case *Call:
		return [][]byte{b, m.Data, m.DataTail}, nil
	case *Result:
		return [][]byte{b, m.Data, m.DataTail}, nil
	}
	return [][]byte{b}, nil
}

// MarshalMessage encodes v as one message payload, joined.
func MarshalMessage(v any) ([]byte, error) {
	parts, err := encodeMessage(v)
	if err != nil {
		return nil, err
	}
	if len(parts) == 1 {
		return parts[0], nil
	}
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b, nil
}

// WriteValue encodes v and writes it as one message of kind k for job. The
// data of a Call or Result is written from where it lies, not copied.
func (w *Writer) WriteValue(k Kind, job uint32, v any) error {
	parts, err := encodeMessage(v)
	if err != nil {
		return fmt.Errorf("wire: encode %s: %w", k, err)
	}
	return w.WriteMessage(k, job, parts...)
}
