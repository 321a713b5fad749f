package fsmon

import (
	"encoding/hex"
	"fmt"
	"strconv"
	"time"
)

// FileFacts is what a regular file was at one moment: the file.* keys
// of a change event (file.size, file.mode, file.owner.*, file.group.*,
// file.mtime, file.hash.sha256), and, as an event's Previous, the
// file.previous.* keys. Facts are values: a sink may keep them.
type FileFacts struct {
	Size int64
	// Mode is the permission bits with set-user-ID, set-group-ID and
	// sticky (st_mode & 07777).
	Mode     uint32
	UID, GID uint32
	// OwnerName and GroupName are UID's and GID's names in the
	// /etc/passwd and /etc/group of the file's group (a container's own
	// for its files); "" when they name none.
	OwnerName, GroupName string
	Mtime                time.Time
	// SHA256 is the content's hash when Hash is HashComputed.
	SHA256 [32]byte
	Hash   HashState
}

// HashState says whether a FileFacts's hash was computed, and if not,
// why: the file.hash.skipped key.
type HashState uint8

const (
	// HashComputed: SHA256 is the content's hash.
	HashComputed HashState = iota + 1
	// HashSkippedSize: the file is larger than --hash.max-size.
	HashSkippedSize
	// HashSkippedRate: the filter's hashes per second
	// (--hash.rate-per-filter) were spent.
	HashSkippedRate
	// HashSkippedBusy: the hashing worker's queue was more than half
	// full; the change is reported with its facts but no hash rather
	// than late.
	HashSkippedBusy
	// HashSkippedUnreadable: the file could not be opened or read.
	HashSkippedUnreadable
	// HashSkippedChanging: the file changed while it was read; a hash
	// of a moving file is of no content that ever was.
	HashSkippedChanging
	// HashSkippedOff: hashing is off (--hash.max-size=0).
	HashSkippedOff
)

var hashStateNames = [...]string{"", "", "size", "rate", "busy", "unreadable", "changing", "off"}

// String is the file.hash.skipped value: "" when the hash was computed
// (or the state is unknown).
func (h HashState) String() string {
	if int(h) < len(hashStateNames) {
		return hashStateNames[h]
	}
	return "unknown"
}

// HashSkips lists every reason a hash is skipped, for label
// pre-population.
var HashSkips = []HashState{HashSkippedSize, HashSkippedRate, HashSkippedBusy, HashSkippedUnreadable, HashSkippedChanging, HashSkippedOff}

// FileKeys are the keys one FileFacts is reported under: the file.*
// keys for what a file is, the same under file.previous. for what it
// was (README, Events).
type FileKeys struct {
	Size, Mode, OwnerID, OwnerName, GroupID, GroupName, Mtime, SHA256, HashSkipped string
}

// The two sets of keys. Previous values nest the same names under
// file.previous, as ECS nests a process's own keys under
// process.parent: a query for file.previous.hash.sha256 reads as what
// it is, and a log store groups them under file.
var (
	FileKeysNow      = fileKeys("file.")
	FileKeysPrevious = fileKeys("file.previous.")
)

func fileKeys(p string) *FileKeys {
	return &FileKeys{
		Size: p + "size", Mode: p + "mode", OwnerID: p + "owner.id", OwnerName: p + "owner.name",
		GroupID: p + "group.id", GroupName: p + "group.name", Mtime: p + "mtime",
		SHA256: p + "hash.sha256", HashSkipped: p + "hash.skipped",
	}
}

// FileAttrs is how a sink writes one key: a string or a number.
type FileAttrs interface {
	String(key, v string)
	Int(key string, v int64)
}

// Report writes f's keys to a, under k: file.size a number, the rest
// strings as the semantic conventions type them (file.mode in octal,
// "0640"; file.owner.id and file.group.id decimal; file.mtime RFC 3339
// with nanoseconds; the hash in lower-case hex). Names the group's files
// do not have, and the hash when it was not computed, are left out;
// file.hash.skipped then says why.
func (f *FileFacts) Report(k *FileKeys, a FileAttrs) {
	if f == nil {
		return
	}
	a.Int(k.Size, f.Size)
	a.String(k.Mode, modeString(f.Mode))
	a.String(k.OwnerID, utoa(f.UID))
	if f.OwnerName != "" {
		a.String(k.OwnerName, f.OwnerName)
	}
	a.String(k.GroupID, utoa(f.GID))
	if f.GroupName != "" {
		a.String(k.GroupName, f.GroupName)
	}
	if !f.Mtime.IsZero() {
		a.String(k.Mtime, f.Mtime.UTC().Format(time.RFC3339Nano))
	}
	switch f.Hash {
	case HashComputed:
		a.String(k.SHA256, hexString(f.SHA256[:]))
	case 0:
	default:
		a.String(k.HashSkipped, f.Hash.String())
	}
}

func modeString(m uint32) string { return fmt.Sprintf("%04o", m&0o7777) }

func utoa(v uint32) string { return strconv.FormatUint(uint64(v), 10) }

func hexString(b []byte) string { return hex.EncodeToString(b) }
