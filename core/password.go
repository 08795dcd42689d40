package core

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
)

// saltLen is the salt length of rabbit_password:hash/2.
const saltLen = 4

// HashPassword returns password in RabbitMQ's rabbit_password_hashing_sha256
// form, base64(salt || sha256(salt || password)) with a random 4-byte salt,
// so that hashes move between ferrymq and RabbitMQ (rabbitmqctl
// export_definitions, hash_password) unchanged.
func HashPassword(password string) string {
	var salt [saltLen]byte
	_, _ = rand.Read(salt[:]) // crypto/rand.Read never fails (it panics instead)
	return encodeHash(salt[:], password)
}

func encodeHash(salt []byte, password string) string {
	h := sha256.New()
	h.Write(salt)
	h.Write([]byte(password))
	return base64.StdEncoding.EncodeToString(h.Sum(append([]byte(nil), salt...)))
}

// parsePasswordHash decodes a rabbit_password_hashing_sha256 hash into its
// salt and digest.
func parsePasswordHash(hash string) (salt, digest []byte, err error) {
	b, err := base64.StdEncoding.DecodeString(hash)
	if err != nil {
		return nil, nil, fmt.Errorf("password hash: not base64: %w", err)
	}
	if len(b) != saltLen+sha256.Size {
		return nil, nil, fmt.Errorf("password hash: %d bytes, want %d (RabbitMQ's salted SHA-256)", len(b), saltLen+sha256.Size)
	}
	return b[:saltLen], b[saltLen:], nil
}

// CheckPasswordHash validates hash as a rabbit_password_hashing_sha256
// hash, for configuration errors to be reported at startup.
func CheckPasswordHash(hash string) error {
	_, _, err := parsePasswordHash(hash)
	return err
}

// passwordMatches compares password with its stored salt and digest in
// constant time.
func passwordMatches(salt, digest []byte, password string) bool {
	h := sha256.New()
	h.Write(salt)
	h.Write([]byte(password))
	return subtle.ConstantTimeCompare(h.Sum(nil), digest) == 1
}
