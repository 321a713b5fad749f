package container

import "testing"

func TestParseNSLink(t *testing.T) {
	for in, want := range map[string]uint64{"mnt:[4026531841]": 4026531841, "mnt:[0]": 0} {
		if v, ok := ParseNSLink([]byte(in)); !ok || v != want {
			t.Errorf("%q: %d %v, want %d", in, v, ok, want)
		}
		if v, err := parseNS(in); err != nil || v != want {
			t.Errorf("parseNS %q: %d %v", in, v, err)
		}
	}
	for _, in := range []string{"", "mnt:", "mnt:[]", "mnt:[12", "mnt:[1x2]", "mnt:[[1]]", "4026531841"} {
		if v, ok := ParseNSLink([]byte(in)); ok {
			t.Errorf("%q parsed as %d", in, v)
		}
		if _, err := parseNS(in); err == nil {
			t.Errorf("parseNS %q: no error", in)
		}
	}
	if n := testing.AllocsPerRun(100, func() { ParseNSLink([]byte("mnt:[4026531841]")) }); n != 0 {
		t.Errorf("%v allocations", n)
	}
}
