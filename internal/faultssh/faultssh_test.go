package faultssh

import (
	"bufio"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/crypto/ssh"

	"github.com/toworker/toworker/internal/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func start(t *testing.T, o Options) *Server {
	t.Helper()
	s, err := Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func clientConfig(t *testing.T, s *Server, timeout time.Duration) *ssh.ClientConfig {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return &ssh.ClientConfig{
		User:            "test",
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.FixedHostKey(s.HostKey),
		Timeout:         timeout,
	}
}

func TestStallNeverFinishesHandshake(t *testing.T) {
	s := start(t, Options{Stall: true})
	c, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	c.Write([]byte("SSH-2.0-test\r\n"))
	var b [1]byte
	if n, err := c.Read(b[:]); n != 0 || err == nil {
		t.Fatalf("stalled server answered %d bytes (%v)", n, err)
	}
	if s.Accepted() != 1 {
		t.Fatalf("Accepted = %d, want 1", s.Accepted())
	}
}

func TestByteDelay(t *testing.T) {
	s := start(t, Options{ByteDelay: 50 * time.Millisecond})
	c, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("SSH-2.0-test\r\n"))
	start := time.Now()
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "SSH-2.0-") {
		t.Fatalf("banner %q, %v", line, err)
	}
	if min := time.Duration(len(line)-1) * 50 * time.Millisecond; time.Since(start) < min {
		t.Fatalf("banner of %d bytes took %v, want at least %v", len(line), time.Since(start), min)
	}
}

// TestFakeAgent runs the bootstrap the way the master does and checks that
// the fake agent answers it and sees the call.
func TestFakeAgent(t *testing.T) {
	calls := make(chan string, 1)
	s := start(t, Options{Exec: func(cmd string, ch ssh.Channel) uint32 {
		a, err := AcceptAgent(ch, wire.Hello{PID: 42})
		if err != nil {
			t.Error(err)
			return 1
		}
		job, call, err := a.NextCall(nil)
		if err != nil {
			t.Error(err)
			return 1
		}
		calls <- fmt.Sprintf("%s %d %s", cmd, job, call.Func)
		a.WriteValue(wire.KindResult, job, &wire.Result{Data: []byte{0x01}})
		return 0
	}})
	client, err := ssh.Dial("tcp", s.Addr, clientConfig(t, s, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	sess, err := client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	in, _ := sess.StdinPipe()
	out, _ := sess.StdoutPipe()
	if err := sess.Start("bootstrap"); err != nil {
		t.Fatal(err)
	}
	// The master pipelines its first call with its hello, in the block
	// the preamble announces.
	hello, _ := wire.Marshal(&wire.Hello{Version: wire.Version, Role: "master"})
	call, _ := wire.Marshal(&wire.Call{Func: "f"})
	block := wire.AppendFrame(nil, wire.Frame{Kind: wire.KindHello, Payload: hello})
	block = wire.AppendFrame(block, wire.Frame{Kind: wire.KindCall, Job: 7, Payload: call})
	fmt.Fprintf(in, "%s %d %d\n%s", wire.MasterPreamble, wire.Version, len(block), block)
	br := bufio.NewReader(out)
	if line, err := br.ReadString('\n'); err != nil || strings.TrimSpace(line) != wire.AgentMarker {
		t.Fatalf("marker %q, %v", line, err)
	}
	r := wire.NewReader(br, wire.Limits{})
	f, err := r.ReadMessage()
	if err != nil || f.Kind != wire.KindHello {
		t.Fatalf("agent hello: %v %v", f.Kind, err)
	}
	if f, err = r.ReadMessage(); err != nil || f.Kind != wire.KindResult || f.Job != 7 {
		t.Fatalf("result: %v job %d %v", f.Kind, f.Job, err)
	}
	if got := <-calls; got != "bootstrap 7 f" {
		t.Fatalf("agent saw %q", got)
	}
	if err := sess.Wait(); err != nil {
		t.Fatalf("exit: %v", err)
	}
}
