// Package httpauth is the one way tideline's HTTP surfaces check a caller:
// a bearer token shared by the operator and its clients, read from the
// environment (TIDELINE_TOKEN) or a file (TIDELINE_TOKEN_FILE, or a
// --token-file flag), never from the command line, where `ps` shows it to
// every user of the machine. Tokens are compared in constant time. With no
// token configured every surface is open, as `tideline dev` runs; README,
// "Security", says what an operator must set.
package httpauth

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
)

// Env and EnvFile are the environment variables a token is read from.
const (
	Env     = "TIDELINE_TOKEN"
	EnvFile = "TIDELINE_TOKEN_FILE"
)

// Token is a configured secret, or none.
type Token struct {
	sum [sha256.Size]byte
	set bool
}

// New returns the token secret; an empty secret is none.
func New(secret string) Token {
	if secret == "" {
		return Token{}
	}
	return Token{sum: sha256.Sum256([]byte(secret)), set: true}
}

// Load reads the token from file if given, else from TIDELINE_TOKEN_FILE,
// else from TIDELINE_TOKEN; none of them set is no token.
func Load(file string) (Token, error) {
	secret, err := Secret(file)
	return New(secret), err
}

// Secret is the token itself, read as Load reads it, for a client to send.
func Secret(file string) (string, error) {
	if file == "" {
		file = os.Getenv(EnvFile)
	}
	if file == "" {
		return os.Getenv(Env), nil
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("cannot read the token file %s: %w", file, err)
	}
	secret := strings.TrimSpace(string(data))
	if secret == "" {
		return "", fmt.Errorf("the token file %s is empty: write the token in it, or unset %s", file, EnvFile)
	}
	return secret, nil
}

// Set reports whether a token is configured.
func (t Token) Set() bool { return t.set }

// ErrUnauthorized is a request without the token.
var ErrUnauthorized = errors.New("send Authorization: Bearer <token>, the server's TIDELINE_TOKEN")

// Check reports whether r carries the token (always, with none set).
func (t Token) Check(r *http.Request) error {
	if !t.set {
		return nil
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	sum := sha256.Sum256([]byte(got)) // same length whatever was sent
	if !ok || subtle.ConstantTimeCompare(sum[:], t.sum[:]) != 1 {
		return ErrUnauthorized
	}
	return nil
}

// Require answers 401 to a request without the token, except on the paths
// public allows (nil: none).
func (t Token) Require(next http.Handler, public func(path string) bool) http.Handler {
	if !t.set {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if (public == nil || !public(r.URL.Path)) && t.Check(r) != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="tideline"`)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintf(w, "{\"error\": %q}\n", ErrUnauthorized.Error())
			return
		}
		next.ServeHTTP(w, r)
	})
}
