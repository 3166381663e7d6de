package cloud

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
)

// TokenEnv is the environment variable that holds the DigitalOcean API token. It wins over the
// provider's token_file.
const TokenEnv = "DIGITALOCEAN_TOKEN"

// Token is a DigitalOcean API token. It prints, logs and marshals as "[redacted]" in every form,
// so that passing one to fmt, slog or encoding/json by mistake leaks nothing; only the HTTP
// transport reads the value.
type Token struct{ v string }

// NewToken wraps a token value, trimming the whitespace and quotes of a pasted token.
func NewToken(s string) Token { return Token{v: strings.Trim(strings.TrimSpace(s), `'"`)} }

// IsZero reports whether the token is empty.
func (t Token) IsZero() bool { return t.v == "" }

// String returns "[redacted]".
func (t Token) String() string { return "[redacted]" }

// GoString returns "[redacted]", for %#v.
func (t Token) GoString() string { return "cloud.Token([redacted])" }

// LogValue makes slog print "[redacted]".
func (t Token) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// MarshalJSON writes "[redacted]".
func (t Token) MarshalJSON() ([]byte, error) { return []byte(`"[redacted]"`), nil }

// MarshalText writes "[redacted]".
func (t Token) MarshalText() ([]byte, error) { return []byte("[redacted]"), nil }

// LoadToken finds the API token: the DIGITALOCEAN_TOKEN environment variable first, then
// tokenFile (the provider's token_file). The file must not be readable by group or others.
func LoadToken(tokenFile string) (Token, error) {
	if v := os.Getenv(TokenEnv); strings.TrimSpace(v) != "" {
		return NewToken(v), nil
	}
	if tokenFile == "" {
		return Token{}, fmt.Errorf("no DigitalOcean API token: set %s or token_file in the provider block", TokenEnv)
	}
	fi, err := os.Stat(tokenFile)
	if err != nil {
		return Token{}, fmt.Errorf("read token_file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return Token{}, fmt.Errorf("token_file %s is readable by others (mode %#o): run chmod 600 %s", tokenFile, fi.Mode().Perm(), tokenFile)
	}
	b, err := os.ReadFile(tokenFile)
	if err != nil {
		return Token{}, fmt.Errorf("read token_file: %w", err)
	}
	t := NewToken(string(b))
	if t.IsZero() {
		return Token{}, errors.New("token_file " + tokenFile + " is empty")
	}
	return t, nil
}
