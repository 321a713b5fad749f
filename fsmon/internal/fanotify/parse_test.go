package fanotify

import (
	"encoding/binary"
	"testing"
)

// event builds one event of a FID group: metadata, then a DFID_NAME
// record.
func event(mask uint64, pid int32, handle []byte, name string) []byte {
	rec := make([]byte, 0, 64)
	rec = append(rec, 2, 0, 0, 0) // DFID_NAME header, length patched below
	rec = append(rec, 1, 2, 3, 4, 5, 6, 7, 8)
	rec = binary.NativeEndian.AppendUint32(rec, uint32(len(handle)))
	rec = binary.NativeEndian.AppendUint32(rec, 1)
	rec = append(rec, handle...)
	rec = append(rec, name...)
	rec = append(rec, 0)
	for len(rec)%4 != 0 {
		rec = append(rec, 0)
	}
	binary.NativeEndian.PutUint16(rec[2:4], uint16(len(rec)))
	md := make([]byte, 24)
	binary.NativeEndian.PutUint32(md[0:4], uint32(24+len(rec)))
	md[4] = 3 // FANOTIFY_METADATA_VERSION
	binary.NativeEndian.PutUint16(md[6:8], 24)
	binary.NativeEndian.PutUint64(md[8:16], mask)
	binary.NativeEndian.PutUint32(md[16:20], 0xffffffff) // FAN_NOFD
	binary.NativeEndian.PutUint32(md[20:24], uint32(pid))
	return append(md, rec...)
}

func TestParseFID(t *testing.T) {
	b := append(event(uint64(Create), 42, []byte{9, 9, 9, 9, 9, 9, 9, 9}, "new.key"), event(uint64(Modify), 43, []byte{1, 2}, "x")...)
	var got []Event
	if err := Parse(b, func(ev *Event) {
		c := *ev
		c.Name = append([]byte(nil), ev.Name...)
		got = append(got, c)
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].PID != 42 || string(got[0].Name) != "new.key" || got[0].FD != -1 ||
		got[0].Dir.FSID != [8]byte{1, 2, 3, 4, 5, 6, 7, 8} || len(got[0].Dir.Handle) != 8 || !got[0].Mask.Has(Create) {
		t.Fatalf("%+v", got)
	}
	if got[1].PID != 43 || string(got[1].Name) != "x" {
		t.Fatalf("%+v", got[1])
	}
}

func TestParseRejectsTruncated(t *testing.T) {
	b := event(uint64(Create), 42, []byte{1, 2, 3, 4}, "n")
	for i := 1; i < len(b); i++ {
		n := 0
		err := Parse(b[:i], func(*Event) { n++ })
		if i < 24 && err == nil {
			t.Fatalf("%d bytes: no error", i)
		}
		if n > 0 && i < len(b) && err == nil && i < int(binary.NativeEndian.Uint32(b[0:4])) {
			t.Fatalf("%d bytes: parsed a truncated event", i)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(event(uint64(Create), 1, []byte{1, 2, 3, 4, 5, 6, 7, 8}, "a"))
	f.Add(make([]byte, 24))
	f.Fuzz(func(t *testing.T, b []byte) {
		Parse(b, func(ev *Event) {
			_ = ev.Dir.Valid()
			_ = string(ev.Name)
		})
	})
}
