package fsmon

import (
	"bytes"
	"strings"
)

// LoaderEnv is what a process's initial environment told its dynamic
// loader to load besides the program (docs/design/deny.md §7), recorded
// at exec. A process whose loader was told so is not the program an
// executable allow entry names: other code runs inside it from its first
// instruction.
type LoaderEnv uint8

const (
	LoaderPreload     LoaderEnv = 1 << iota // LD_PRELOAD=
	LoaderAudit                             // LD_AUDIT=
	LoaderLibraryPath                       // LD_LIBRARY_PATH=
	// LoaderTruncated: the environment is longer than what was scanned,
	// so one of the variables may be past the end.
	LoaderTruncated
	// LoaderUnreadable: the environment could not be read.
	LoaderUnreadable
	// LoaderSecure: the exec was secure-exec (AT_SECURE: setuid, file
	// capabilities), in which the loader ignores these variables, save
	// for preloading setuid libraries of the system's own directories.
	LoaderSecure
)

// Refuses reports whether the process must not count as its executable:
// it was told to load other code, or what it was told cannot be known,
// and its loader did not ignore it.
func (l LoaderEnv) Refuses() bool {
	return l&LoaderSecure == 0 && l&(LoaderPreload|LoaderAudit|LoaderLibraryPath|LoaderTruncated|LoaderUnreadable) != 0
}

var loaderNames = [...]string{"LD_PRELOAD", "LD_AUDIT", "LD_LIBRARY_PATH", "truncated", "unreadable"}

// String is the `process.loader_env` value of a report: the variables
// found, comma-separated ("LD_PRELOAD,LD_LIBRARY_PATH"), or "truncated"
// or "unreadable" when that is why; empty when nothing refuses.
func (l LoaderEnv) String() string {
	if !l.Refuses() {
		return ""
	}
	var b strings.Builder
	for i, n := range loaderNames {
		if l&(1<<i) == 0 {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(n)
	}
	return b.String()
}

// LoaderEnvOf scans an environment block (NUL-separated NAME=value
// strings, as /proc/PID/environ holds it) for the variables.
func LoaderEnvOf(env []byte) LoaderEnv {
	var l LoaderEnv
	for len(env) > 0 {
		s := env
		if i := bytes.IndexByte(env, 0); i >= 0 {
			s, env = env[:i], env[i+1:]
		} else {
			env = nil
		}
		switch {
		case hasPrefix(s, "LD_PRELOAD="):
			l |= LoaderPreload
		case hasPrefix(s, "LD_AUDIT="):
			l |= LoaderAudit
		case hasPrefix(s, "LD_LIBRARY_PATH="):
			l |= LoaderLibraryPath
		}
	}
	return l
}

func hasPrefix(b []byte, p string) bool { return len(b) >= len(p) && string(b[:len(p)]) == p }
