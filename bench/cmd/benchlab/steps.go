package main

import (
	"context"
	"fmt"
	"time"

	"github.com/toworker/toworker/internal/sshdial"
)

// handshakeLabels name the master's flights of an SSH connection up to a
// successful publickey login, in the order both OpenSSH's ssh and
// x/crypto/ssh's client send them (the server sends its version and
// KEXINIT together, so the client's KEXINIT and ECDH init leave together).
var handshakeLabels = []string{
	"version string",
	"KEXINIT + ECDH init (key exchange)",
	"NEWKEYS + service request (ssh-userauth)",
	"auth: method none (learn the methods)",
	"auth: publickey query (is this key acceptable?)",
	"auth: publickey, signed",
}

// bulkFlight is the size from which a master flight counts as bulk data.
const bulkFlight = 16 << 10

// traceShape is what a Dial-only probe over the relay tells about the SSH
// part of a connection: how many master flights the handshake and the
// channel open take.
type traceShape struct {
	handshake int // master flights until Dial returned
	open      int // master flights of NewSession
}

// probeShape dials slow1 with internal/sshdial (the code the master uses)
// and opens a session, to count the flights of each part.
func (e *env) probeShape() (traceShape, error) {
	var sh traceShape
	e.relay.take()
	t, err := sshdial.Resolve(slowHost, sshdial.Options{ConfigFile: e.cfg})
	if err != nil {
		return sh, err
	}
	ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	defer cancel()
	c, err := sshdial.Dial(ctx, t, sshdial.Options{ConfigFile: e.cfg})
	if err != nil {
		return sh, err
	}
	time.Sleep(e.rtt) // let every flight of the handshake be seen
	mid := e.relay.take()
	s, err := c.NewSession()
	if err == nil {
		time.Sleep(e.rtt)
		s.Close()
	}
	c.Close()
	after := e.relay.take()
	if err != nil {
		return sh, err
	}
	if len(mid) != 1 {
		return sh, fmt.Errorf("expected one relayed connection, saw %d", len(mid))
	}
	for _, f := range flights(mid[0].chunks, e.rtt) {
		if f.Up {
			sh.handshake++
		}
	}
	sh.open = 1
	_ = after
	return sh, nil
}

// steps turns the flights of one traced connection into a step table: one
// row per master (client) flight, costed until the master's next flight.
// TCP's handshake, which the relay does not delay, is the first row at
// 1 RTT and shifts every later time by 1. Flights after end (the result's
// arrival, or the process's exit) are left out; a last row marks end.
func steps(path string, fs []Flight, sh traceShape, toworker bool, end float64) []Step {
	out := []Step{{Path: path, Step: "TCP handshake (not simulated by the relay)", At: 0, Cost: 1}}
	var ups []Flight
	for _, f := range fs {
		if f.Up && f.At <= end {
			ups = append(ups, f)
		}
	}
	label := func(i int) string {
		switch {
		case i < sh.handshake && sh.handshake == len(handshakeLabels):
			return handshakeLabels[i]
		case i < sh.handshake:
			return fmt.Sprintf("SSH handshake, master flight %d", i+1)
		case i < sh.handshake+sh.open:
			return "channel open (session)"
		case toworker:
			return fmt.Sprintf("toworker: master flight %d after the channel open", i-sh.handshake-sh.open+1)
		default:
			return fmt.Sprintf("ssh: master flight %d after the channel open", i-sh.handshake-sh.open+1)
		}
	}
	for i := 0; i < len(ups); i++ {
		f := ups[i]
		name := label(i)
		// A bulk transfer (the agent's upload) leaves as many flights as
		// the channel window allows: one row for all of them.
		if f.Bytes >= bulkFlight && i >= sh.handshake+sh.open {
			j := i
			for j+1 < len(ups) && ups[j+1].Bytes >= bulkFlight {
				j++
				f.Bytes += ups[j].Bytes
			}
			if j > i {
				name = fmt.Sprintf("bulk data (%d flights, paced by the channel window)", j-i+1)
				i = j
			}
		}
		next := end
		if i+1 < len(ups) {
			next = ups[i+1].At
		}
		out = append(out, Step{Path: path, Step: name, At: f.At + 1, Cost: next - f.At, Bytes: f.Bytes})
	}
	what := "process exits"
	if toworker {
		what = "result received"
	}
	out = append(out, Step{Path: path, Step: what, At: end + 1})
	return out
}
