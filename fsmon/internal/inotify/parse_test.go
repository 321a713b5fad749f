package inotify

import (
	"encoding/binary"
	"testing"
)

func raw(wd int32, mask uint32, name string) []byte {
	n := len(name) + 1
	for n%16 != 0 {
		n++
	}
	b := make([]byte, 16+n)
	binary.NativeEndian.PutUint32(b[0:4], uint32(wd))
	binary.NativeEndian.PutUint32(b[4:8], mask)
	binary.NativeEndian.PutUint32(b[12:16], uint32(n))
	copy(b[16:], name)
	return b
}

func TestParse(t *testing.T) {
	b := append(raw(3, uint32(Create|IsDir), "sub"), raw(4, uint32(QOverflow), "")...)
	var names []string
	var masks []Mask
	if err := Parse(b, func(ev *Event) { names = append(names, string(ev.Name)); masks = append(masks, ev.Mask) }); err != nil {
		t.Fatal(err)
	}
	if len(names) != 2 || names[0] != "sub" || !masks[0].Has(Create|IsDir) || names[1] != "" || !masks[1].Has(QOverflow) {
		t.Fatalf("%q %v", names, masks)
	}
	if err := Parse(b[:20], func(*Event) {}); err == nil {
		t.Fatal("truncated batch accepted")
	}
}

func FuzzParse(f *testing.F) {
	f.Add(raw(1, uint32(Create), "x"))
	f.Fuzz(func(t *testing.T, b []byte) {
		Parse(b, func(ev *Event) { _ = string(ev.Name) })
	})
}
