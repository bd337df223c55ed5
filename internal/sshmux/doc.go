// Package sshmux is a client of OpenSSH's connection multiplexing: it asks
// a running ControlMaster (`ssh -M`, listening on its ControlPath socket) to
// run a command in a new session over the master's existing connection, as
// `ssh -S path host cmd` does. No new TCP connection, key exchange or
// authentication takes place.
//
// It speaks version 4 of the protocol that OpenSSH's PROTOCOL.mux describes
// and mux.c implements, in passenger mode only: Open sends a new-session
// request and passes the master three pipes (the command's stdin, stdout and
// stderr) over the control socket; Forward asks for a connection from the
// master's host to another host and port, as ssh -W does through a master
// (which ssh -J does for a jump host that has one), and passes two pipes.
// There is no port forwarding, no proxy mode (ssh -O proxy), no master
// control commands (check, exit, stop, cancel), no terminal, X11 or agent
// forwarding, and no escape character. Unix systems only: elsewhere Open
// and Forward fail.
//
// Open does not wait for the remote session to open: it returns once the
// request and the pipes are sent, so that input written at once travels with
// the session's opening. Session.Opened and Session.OpenErr tell afterwards
// whether the master opened the session or refused it (a *RefusedError:
// nothing ran, so the caller may connect directly instead); Session.Wait
// returns the command's exit status.
//
// The environment given to Open is sent as ssh sends a mux client's, but
// the master filters it: it forwards only the variables that its own
// SendEnv patterns match (adding those of its own SetEnv), and the server
// keeps only those its AcceptEnv allows.
//
// The master accepts clients of its own user (or root) only.
package sshmux
