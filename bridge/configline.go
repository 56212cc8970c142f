package bridge

import (
	"bufio"
	"bytes"
	"fmt"
	"strings"

	"github.com/BurntSushi/toml"
)

// validationLine finds the line a Validate error is about. The error
// starts with its section ("proxy: ...", "cache: ...", "radio[1]: ...");
// of the keys set in that table (the index-th for an array of tables),
// the one the message names first is the line; if it names none, say for
// a key that is missing, the table's header. 0 when neither is found.
func validationLine(data []byte, msg string) int {
	table, index := msg, -1
	if i := strings.IndexAny(table, ":[ "); i >= 0 {
		table = table[:i]
	}
	if rest, ok := strings.CutPrefix(msg[len(table):], "["); ok {
		if _, err := fmt.Sscanf(rest, "%d]", &index); err != nil {
			return 0
		}
	}
	about := messageWords(msg[len(table):])
	header, best, bestAt := 0, 0, len(about)
	cur, instance := "", -1
	arrays := map[string]int{} // [[name]] tables seen so far, by name
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "[") {
			name := strings.TrimSpace(strings.Trim(strings.SplitN(line, "#", 2)[0], "[] \t"))
			cur, instance = name, -1
			if strings.HasPrefix(line, "[[") {
				arrays[name]++
				instance = arrays[name] - 1
			}
			if cur == table && (index < 0 || instance == index) {
				header = n
			}
			continue
		}
		if cur != table || (index >= 0 && instance != index) {
			continue
		}
		eq := strings.Index(line, "=")
		if eq <= 0 {
			continue
		}
		key := strings.Trim(strings.TrimSpace(line[:eq]), `"'`)
		if at := wordIndex(about, key); at >= 0 && at < bestAt {
			best, bestAt = n, at
		}
	}
	if best > 0 {
		return best
	}
	return header
}

// messageWords is the part of a Validate message that can name a key:
// after the package's "bad config:"/"invalid config:" and the array
// table's name ([[plugin]] "x":), with quoted values blanked, so that
// neither a word of the wrapping nor a value equal to a key's name is
// taken for the key.
func messageWords(msg string) string {
	for _, mark := range []string{"bad config: ", "invalid config: "} {
		if i := strings.LastIndex(msg, mark); i >= 0 {
			msg = msg[i+len(mark):]
		}
	}
	b := []byte(msg)
	quoted := false
	for i, c := range b {
		switch {
		case c == '"' && (i == 0 || b[i-1] != '\\'):
			quoted = !quoted
		case quoted:
			b[i] = ' '
		}
	}
	return string(b)
}

// wordIndex is the index of the first whole-word w in s, or -1.
func wordIndex(s, w string) int {
	word := func(b byte) bool {
		return b == '_' || b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9'
	}
	for off := 0; w != ""; {
		i := strings.Index(s[off:], w)
		if i < 0 {
			return -1
		}
		i += off
		end := i + len(w)
		if (i == 0 || !word(s[i-1])) && (end == len(s) || !word(s[end])) {
			return i
		}
		off = i + 1
	}
	return -1
}

// keyLine finds the line where an undecoded key is set: the decoder does
// not report positions for keys it did not use.
func keyLine(data []byte, k toml.Key) int {
	if len(k) == 0 {
		return 0
	}
	table, leaf := strings.Join(k[:len(k)-1], "."), k[len(k)-1]
	cur := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "[") {
			name := strings.Trim(line, "[] \t")
			if i := strings.Index(name, "]"); i >= 0 {
				name = name[:i]
			}
			cur = strings.TrimSpace(name)
			if cur == strings.Join(k, ".") {
				return n // an unknown table
			}
			continue
		}
		if cur != table {
			continue
		}
		if eq := strings.Index(line, "="); eq > 0 && strings.Trim(strings.TrimSpace(line[:eq]), `"`) == leaf {
			return n
		}
	}
	return 0
}
