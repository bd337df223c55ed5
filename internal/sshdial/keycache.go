package sshdial

import (
	"crypto/sha256"
	"sync"

	"golang.org/x/crypto/ssh"
)

// privateKeys keeps what ssh.ParsePrivateKey made of each identity file's
// contents, by their SHA-256. Parsing an RSA key checks it (5.6 ms for
// 4,096 bits here), and every connection of a fan-out loads the same files;
// now each loads the file and hashes it. Keyed by contents, an entry is
// never stale, and the cache holds no copy of the key file, only its
// digest beside the parsed key that a connection holds anyway.
var privateKeys struct {
	mu sync.Mutex
	m  map[[sha256.Size]byte]parsedKey
}

// parsedKey is the signer of an unencrypted key, or the parse error (a
// *ssh.PassphraseMissingError for an encrypted one).
type parsedKey struct {
	signer ssh.Signer
	err    error
}

// maxPrivateKeys bounds privateKeys: a user has a handful of identity files.
const maxPrivateKeys = 32

// parsePrivateKey is ssh.ParsePrivateKey, once per distinct contents. The
// signers it returns are shared by connections; x/crypto/ssh's signers
// keep no state between signatures.
func parsePrivateKey(data []byte) (ssh.Signer, error) {
	sum := sha256.Sum256(data)
	// Held while parsing: the connections of a fan-out, which all start
	// at once, wait for the first one's parse instead of each parsing.
	privateKeys.mu.Lock()
	defer privateKeys.mu.Unlock()
	if p, ok := privateKeys.m[sum]; ok {
		return p.signer, p.err
	}
	var p parsedKey
	p.signer, p.err = ssh.ParsePrivateKey(data)
	if privateKeys.m == nil || len(privateKeys.m) >= maxPrivateKeys {
		privateKeys.m = make(map[[sha256.Size]byte]parsedKey)
	}
	privateKeys.m[sum] = p
	return p.signer, p.err
}

// terminalMu serializes the questions asked on the terminal (passphrases,
// StrictHostKeyChecking=ask): the connections of a fan-out would otherwise
// ask at once, their prompts and answers mixed.
var terminalMu sync.Mutex

// decryptedKeys keeps the signers of encrypted identity files decrypted
// with a passphrase typed in this process, by the SHA-256 of the file, so
// that the passphrase is asked once per process, as one ssh process asks
// it once, and not once per connection.
var decryptedKeys struct {
	mu sync.Mutex
	m  map[[sha256.Size]byte]ssh.Signer
}

func decryptedKey(sum [sha256.Size]byte) ssh.Signer {
	decryptedKeys.mu.Lock()
	defer decryptedKeys.mu.Unlock()
	return decryptedKeys.m[sum]
}

func keepDecryptedKey(sum [sha256.Size]byte, s ssh.Signer) {
	decryptedKeys.mu.Lock()
	defer decryptedKeys.mu.Unlock()
	if decryptedKeys.m == nil || len(decryptedKeys.m) >= maxPrivateKeys {
		decryptedKeys.m = make(map[[sha256.Size]byte]ssh.Signer)
	}
	decryptedKeys.m[sum] = s
}
