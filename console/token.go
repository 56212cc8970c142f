package console

import (
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
)

// Token file bounds.
const (
	MinTokenLen  = 16   // characters: a token shorter is refused
	maxTokenFile = 4096 // bytes
)

// ErrToken is wrapped by every error about a token file.
var ErrToken = errors.New("console: token file")

// ReadToken reads a bearer token from path: one line of at least
// MinTokenLen characters of RFC 6750 §2.1's b64token (letters, digits and
// "-._~+/", then "=" padding), surrounding white space ignored. The file
// must be a regular file of at most 4 KiB that others (not its owner, not
// its group) cannot read: 0600, or 0640 with the daemon's group.
func ReadToken(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("%w %s: %w", ErrToken, path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("%w %s: %w", ErrToken, path, err)
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("%w %s: not a regular file", ErrToken, path)
	}
	if st.Mode().Perm()&0o007 != 0 {
		return "", fmt.Errorf("%w %s: mode %v lets others use it; chmod 0600, or 0640 with gatewayd's group", ErrToken, path, st.Mode().Perm())
	}
	b, err := io.ReadAll(io.LimitReader(f, maxTokenFile+1))
	if err != nil {
		return "", fmt.Errorf("%w %s: %w", ErrToken, path, err)
	}
	if len(b) > maxTokenFile {
		return "", fmt.Errorf("%w %s: larger than %d bytes", ErrToken, path, maxTokenFile)
	}
	tok := strings.TrimSpace(string(b))
	if err := checkToken(tok); err != nil {
		return "", fmt.Errorf("%w %s: %w", ErrToken, path, err)
	}
	return tok, nil
}

func checkToken(tok string) error {
	if len(tok) < MinTokenLen {
		return fmt.Errorf("the token has %d characters, want at least %d", len(tok), MinTokenLen)
	}
	body := strings.TrimRight(tok, "=")
	for _, c := range body {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-._~+/", c)
		if !ok {
			return fmt.Errorf("the token has %q; want letters, digits and -._~+/ (RFC 6750 §2.1)", c)
		}
	}
	if body == "" {
		return errors.New("the token is only padding")
	}
	return nil
}

// Authorize serves next only to requests that carry the token current
// returns, as "Authorization: Bearer <token>" (RFC 6750 §2.1) or as the
// password of HTTP Basic authentication (RFC 7617, any user name: what a
// browser can send, after asking once). When current returns "" every
// request passes. Others get 401 with both challenges.
func Authorize(current func() string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok := current()
		if tok == "" || presented(r, tok) {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Add("WWW-Authenticate", `Basic realm="gatewayd", charset="UTF-8"`)
		w.Header().Add("WWW-Authenticate", `Bearer realm="gatewayd"`)
		http.Error(w, "gatewayd: this admin endpoint wants its token (Authorization: Bearer, or the password of Basic)", http.StatusUnauthorized)
	})
}

func presented(r *http.Request, tok string) bool {
	h := r.Header.Get("Authorization")
	scheme, cred, _ := strings.Cut(h, " ")
	cred = strings.TrimSpace(cred)
	switch {
	case strings.EqualFold(scheme, "Bearer"):
		return subtle.ConstantTimeCompare([]byte(cred), []byte(tok)) == 1
	case strings.EqualFold(scheme, "Basic"):
		raw, err := base64.StdEncoding.DecodeString(cred)
		if err != nil {
			return false
		}
		_, pass, ok := strings.Cut(string(raw), ":")
		return ok && subtle.ConstantTimeCompare([]byte(pass), []byte(tok)) == 1
	}
	return false
}

// hostIsAddress reports a Host header that names the server by an IP
// address or as localhost: a page of another site that a DNS name it
// controls rebinds to 127.0.0.1 sends its own name, and gets nothing.
func hostIsAddress(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	_, err := netip.ParseAddr(host)
	return err == nil
}
