package sshdial

import (
	"crypto/rand"
	"crypto/rsa"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

// acceptedSigner restricts each key to the signature algorithms that
// PubkeyAcceptedAlgorithms allows for it, or leaves it out.
func TestAcceptedSigner(t *testing.T) {
	edPriv, _ := randomKey(t)
	ed, _ := ssh.NewSignerFromKey(edPriv)
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rs, _ := ssh.NewSignerFromKey(rk)
	caPriv, _ := randomKey(t)
	ca, _ := ssh.NewSignerFromKey(caPriv)
	cert := &ssh.Certificate{Key: rs.PublicKey(), CertType: ssh.UserCert, ValidPrincipals: []string{"u"}, ValidBefore: ssh.CertTimeInfinity}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	rsaCert, _ := ssh.NewCertSigner(cert, rs)

	for _, tc := range []struct {
		name     string
		s        ssh.Signer
		accepted string
		want     string // the algorithms it may sign with, "all", or "" when left out
	}{
		{"ed25519 by default", ed, strings.Join(defaultPubkeyAlgos, ","), "all"},
		{"rsa by default: no ssh-rsa", rs, strings.Join(defaultPubkeyAlgos, ","), "rsa-sha2-512,rsa-sha2-256"},
		{"rsa, sha-256 only", rs, "ssh-ed25519,rsa-sha2-256", "rsa-sha2-256"},
		{"rsa, every algorithm", rs, "rsa-sha2-256,ssh-rsa,rsa-sha2-512", "all"},
		{"rsa left out", rs, "ssh-ed25519", ""},
		{"ed25519 left out", ed, "rsa-sha2-512", ""},
		{"rsa plain signer, ssh-rsa allowed", sha1Only{rs}, "ssh-rsa", "all"},
		{"rsa plain signer, ssh-rsa not allowed", sha1Only{rs}, "rsa-sha2-512", ""},
		{"rsa certificate by default", rsaCert, strings.Join(defaultPubkeyAlgos, ","), "rsa-sha2-512,rsa-sha2-256"},
		{"rsa certificate, plain names only", rsaCert, "rsa-sha2-512,rsa-sha2-256", ""},
		{"rsa certificate, sha-512 certificates", rsaCert, "rsa-sha2-512-cert-v01@openssh.com", "rsa-sha2-512"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := acceptedSigner(tc.s, strings.Split(tc.accepted, ","))
			switch {
			case tc.want == "":
				if got != nil {
					t.Errorf("offered, want left out")
				}
			case got == nil:
				t.Errorf("left out, want %s", tc.want)
			case tc.want == "all":
				if got != tc.s {
					t.Errorf("restricted, want the signer as it is")
				}
			default:
				ms, ok := got.(ssh.MultiAlgorithmSigner)
				if !ok || !slices.Equal(ms.Algorithms(), strings.Split(tc.want, ",")) {
					t.Errorf("algorithms %v, want %s", got, tc.want)
				}
			}
		})
	}
}
