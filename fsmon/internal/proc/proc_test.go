package proc

import (
	"os"
	"testing"
)

const statLine = "4242 (my (odd) name) S 17 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n"

func TestParseStat(t *testing.T) {
	v, err := ParseStatView([]byte(statLine))
	if err != nil {
		t.Fatal(err)
	}
	if string(v.Comm) != "my (odd) name" || v.PPID != 17 || v.StartTime != 987654 || v.Flags != 4194560 {
		t.Fatalf("%+v", v)
	}
	for _, bad := range []string{"", "42 no parens", "42 (x) S", "42 (x) S abc"} {
		if _, err := ParseStatView([]byte(bad)); err == nil {
			t.Errorf("ParseStatView(%q) accepted", bad)
		}
	}
}

func TestReadSelf(t *testing.T) {
	fs := FS{Root: "/proc"}
	pid := int32(os.Getpid())
	var buf [1024]byte
	v, err := fs.ReadStat(pid, buf[:])
	if err != nil {
		t.Fatal(err)
	}
	if int(v.PPID) != os.Getppid() {
		t.Errorf("ppid %d, want %d", v.PPID, os.Getppid())
	}
	exe, _ := os.Executable()
	var eb [4096]byte
	got, err := fs.ReadExe(pid, eb[:])
	if err != nil || string(got) != exe {
		t.Errorf("exe %q %v, want %q", got, err, exe)
	}
	if uid, err := fs.EUID(pid); err != nil || int(uid) != os.Geteuid() {
		t.Errorf("euid %d %v", uid, err)
	}
	if cl, err := fs.Cmdline(pid); err != nil || cl == "" {
		t.Errorf("cmdline %q %v", cl, err)
	}
}

func TestReadStatAllocatesNothing(t *testing.T) {
	fs := FS{Root: "/proc"}
	pid := int32(os.Getpid())
	var buf [1024]byte
	var eb [4096]byte
	if n := testing.AllocsPerRun(100, func() {
		fs.ReadStat(pid, buf[:])
		fs.ReadExe(pid, eb[:])
	}); n != 0 {
		t.Errorf("%v allocations per read", n)
	}
}

func FuzzParseStatView(f *testing.F) {
	f.Add([]byte(statLine))
	f.Add([]byte("1 (a) S 0"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ParseStatView(b)
		ParseEUID(b)
	})
}
