package fsmon

import "strings"

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
	var s LoaderScan
	s.Scan(env)
	return s.Env
}

// LoaderScan scans an environment block given in pieces, a string
// possibly split between two: it keeps the start of the current string
// up to its '=' (the longest name is 16 bytes with it).
type LoaderScan struct {
	Env LoaderEnv
	pre [16]byte
	n   int8 // bytes of the current string kept; -1: past its name
}

// Scan takes the next piece of the block.
func (s *LoaderScan) Scan(b []byte) {
	for _, c := range b {
		switch {
		case c == 0:
			s.n = 0
		case s.n < 0:
		case c == '=':
			switch string(s.pre[:s.n]) {
			case "LD_PRELOAD":
				s.Env |= LoaderPreload
			case "LD_AUDIT":
				s.Env |= LoaderAudit
			case "LD_LIBRARY_PATH":
				s.Env |= LoaderLibraryPath
			}
			s.n = -1
		case int(s.n) == len(s.pre):
			s.n = -1 // longer than any of the names
		default:
			s.pre[s.n] = c
			s.n++
		}
	}
}
