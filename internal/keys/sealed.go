// Package keys keeps Bulwark's key material. This first part is the sealed
// file keystore that dev mode and single-node servers use: every key is
// encrypted (AES-256-GCM, bound to its name) under a key-encryption key and
// written 0600 in a 0700 directory; nothing is kept in environment
// variables or configuration files. Later parts add envelope encryption,
// rotation and a PKCS#11 HSM root for the key-encryption key.
package keys

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"

	"github.com/bulwarksec/bulwark/internal/devinfo"
)

const (
	kekFile    = "kek"
	kekSize    = 32
	sealMagic  = "bulwark-sealed-v1\n"
	maxKeySize = 1 << 20
)

var validName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// Sealed is a directory of sealed keys.
type Sealed struct {
	dir  string
	aead cipher.AEAD
}

// OpenSealed opens (creating on first use) the keystore in dir. The
// key-encryption key is generated at first use and stored in dir with mode
// 0600; OpenSealed refuses a directory or key file that others can read.
func OpenSealed(dir string) (*Sealed, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("keystore %s: %w", dir, err)
	}
	if err := checkPrivate(dir, true); err != nil {
		return nil, err
	}
	kekPath := filepath.Join(dir, kekFile)
	kek, err := readPrivateFile(kekPath)
	if errors.Is(err, os.ErrNotExist) {
		kek = make([]byte, kekSize)
		if _, err := rand.Read(kek); err != nil {
			return nil, fmt.Errorf("keystore %s: generate key-encryption key: %w", dir, err)
		}
		if err := createExclusive(kekPath, kek); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, err
	}
	if len(kek) != kekSize {
		return nil, fmt.Errorf("keystore %s: key-encryption key is %d bytes, want %d", dir, len(kek), kekSize)
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, fmt.Errorf("keystore %s: %w", dir, err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("keystore %s: %w", dir, err)
	}
	return &Sealed{dir: dir, aead: aead}, nil
}

// LoadOrCreate returns the key called name, generating it with gen and
// sealing it to disk if it does not exist yet.
func (s *Sealed) LoadOrCreate(name string, gen func() ([]byte, error)) ([]byte, error) {
	key, err := s.Load(name)
	if !errors.Is(err, os.ErrNotExist) {
		return key, err
	}
	key, err = gen()
	if err != nil {
		return nil, fmt.Errorf("generate key %q: %w", name, err)
	}
	if err := s.Store(name, key); err != nil {
		return nil, err
	}
	return key, nil
}

// Load unseals the key called name. A missing key is an error wrapping
// os.ErrNotExist; a key that fails authentication (tampered, or sealed
// under another key-encryption key) is an error that says so.
func (s *Sealed) Load(name string) ([]byte, error) {
	if !validName.MatchString(name) {
		return nil, fmt.Errorf("key name %q: must match %s", name, validName)
	}
	blob, err := readPrivateFile(s.path(name))
	if err != nil {
		return nil, err
	}
	rest, ok := cutPrefix(blob, sealMagic)
	ns := s.aead.NonceSize()
	if !ok || len(rest) < ns+s.aead.Overhead() {
		return nil, fmt.Errorf("sealed key %q: not a sealed key file", name)
	}
	plain, err := s.aead.Open(nil, rest[:ns], rest[ns:], []byte(name))
	if err != nil {
		return nil, fmt.Errorf("sealed key %q: authentication failed (tampered, or sealed under another key)", name)
	}
	return plain, nil
}

// Store seals key under name. It refuses to overwrite an existing key: keys
// are rotated by adding new names, never by replacing sealed files.
func (s *Sealed) Store(name string, key []byte) error {
	if !validName.MatchString(name) {
		return fmt.Errorf("key name %q: must match %s", name, validName)
	}
	if len(key) > maxKeySize {
		return fmt.Errorf("key %q: %d bytes is too large", name, len(key))
	}
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return fmt.Errorf("seal key %q: %w", name, err)
	}
	blob := append([]byte(sealMagic), nonce...)
	blob = s.aead.Seal(blob, nonce, key, []byte(name))
	return createExclusive(s.path(name), blob)
}

func (s *Sealed) path(name string) string { return filepath.Join(s.dir, name+".sealed") }

// createExclusive writes a new 0600 file, failing if it exists, durably.
func createExclusive(path string, data []byte) error {
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("write %s: %w", path, os.ErrExist)
	}
	return devinfo.WriteFileAtomic(path, data, 0o600)
}

func readPrivateFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("read %s: %w", path, os.ErrNotExist)
		}
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	if err := checkPrivate(path, false); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(f, maxKeySize+1024))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return b, nil
}

// checkPrivate refuses key files and directories that group or others can
// access: a key that may have been read is no longer secret.
func checkPrivate(path string, dir bool) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return fmt.Errorf("stat %s: %w", path, err)
	}
	if fi.Mode()&os.ModeSymlink != 0 {
		return fmt.Errorf("%s is a symbolic link; key material must be a regular file", path)
	}
	if dir != fi.IsDir() {
		return fmt.Errorf("%s: unexpected file type %s", path, fi.Mode().Type())
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("%s has mode %04o; key material must not be accessible to group or others (chmod %s)",
			path, fi.Mode().Perm(), map[bool]string{true: "700", false: "600"}[dir])
	}
	return nil
}

func cutPrefix(b []byte, prefix string) ([]byte, bool) {
	if len(b) < len(prefix) || string(b[:len(prefix)]) != prefix {
		return nil, false
	}
	return b[len(prefix):], true
}

// blobMagic starts every sealed blob, and its AAD prefix keeps blobs and
// key files from being swapped for each other.
const blobMagic = "bwk-blob-v1:"

// Seal encrypts plaintext under the key-encryption key, bound to context
// (for example the table and row the blob is stored in), so that it can be
// kept in the database. Open with the same context reverses it.
func (s *Sealed) Seal(plaintext []byte, context string) ([]byte, error) {
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("seal %s: %w", context, err)
	}
	blob := append([]byte(blobMagic), nonce...)
	return s.aead.Seal(blob, nonce, plaintext, []byte(blobMagic+context)), nil
}

// Open decrypts a blob made by Seal with the same context. A blob that was
// altered, sealed for another context or under another key-encryption key
// is an error.
func (s *Sealed) Open(blob []byte, context string) ([]byte, error) {
	rest, ok := cutPrefix(blob, blobMagic)
	ns := s.aead.NonceSize()
	if !ok || len(rest) < ns+s.aead.Overhead() {
		return nil, fmt.Errorf("open %s: not a sealed blob", context)
	}
	plain, err := s.aead.Open(nil, rest[:ns], rest[ns:], []byte(blobMagic+context))
	if err != nil {
		return nil, fmt.Errorf("open %s: authentication failed (tampered, moved, or sealed under another key)", context)
	}
	return plain, nil
}
