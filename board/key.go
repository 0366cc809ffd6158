package board

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/keyframe-cam/keyframe/internal/atomicfile"
)

// Key is a device signing key. It is a crypto.Signer, so the private part may
// live where it cannot be read (a TPM); Backend names where it lives ("file",
// "tpm") and is recorded in every envelope.
type Key interface {
	crypto.Signer
	Backend() string
}

// BackendFile names a key kept in a file on the device's storage.
const BackendFile = "file"

type fileKey struct {
	*ecdsa.PrivateKey
}

func (fileKey) Backend() string { return BackendFile }

// LoadOrCreateFileKey loads the ECDSA P-256 key at path, or creates one from
// rnd if the file does not exist. The file is PKCS#8 PEM with mode 0600,
// written atomically: a crash leaves either no key or a whole key. created
// reports whether a new key was made. A key file readable by group or others
// is refused.
func LoadOrCreateFileKey(path string, rnd io.Reader) (k Key, created bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return createFileKey(path, rnd)
	}
	if err != nil {
		return nil, false, fmt.Errorf("board: read key: %w", err)
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, false, fmt.Errorf("board: stat key: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, false, fmt.Errorf("board: key %s has mode %v: it must not be readable by group or others (chmod 600 it)", path, st.Mode().Perm())
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, false, fmt.Errorf("board: key %s: no PEM \"PRIVATE KEY\" block", path)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, false, fmt.Errorf("board: key %s: %w", path, err)
	}
	ek, ok := parsed.(*ecdsa.PrivateKey)
	if !ok || ek.Curve != elliptic.P256() {
		return nil, false, fmt.Errorf("board: key %s: want an ECDSA P-256 key, have %T", path, parsed)
	}
	return fileKey{ek}, false, nil
}

func createFileKey(path string, rnd io.Reader) (Key, bool, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, fmt.Errorf("board: key directory: %w", err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rnd)
	if err != nil {
		return nil, false, fmt.Errorf("board: generate key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(ek)
	if err != nil {
		return nil, false, fmt.Errorf("board: encode key: %w", err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if err := atomicfile.WriteFile(path, data, 0o600); err != nil {
		return nil, false, fmt.Errorf("board: write key: %w", err)
	}
	return fileKey{ek}, true, nil
}

// PublicKeyPEM encodes a public key as a PEM "PUBLIC KEY" block (SPKI).
func PublicKeyPEM(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("board: encode public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}
