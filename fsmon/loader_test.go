package fsmon

import "testing"

// TestLoaderEnvOf: the variables are found by name at the start of a
// string only, and the report names them.
func TestLoaderEnvOf(t *testing.T) {
	for _, tc := range []struct {
		env  string
		want LoaderEnv
		name string
	}{
		{"", 0, ""},
		{"PATH=/usr/bin\x00HOME=/\x00", 0, ""},
		{"A=1\x00LD_PRELOAD=/x.so\x00", LoaderPreload, "LD_PRELOAD"},
		{"LD_PRELOAD=", LoaderPreload, "LD_PRELOAD"},
		{"LD_LIBRARY_PATH=/l\x00LD_AUDIT=a\x00", LoaderAudit | LoaderLibraryPath, "LD_AUDIT,LD_LIBRARY_PATH"},
		{"LD_PRELOADX=1\x00LD_PRELOAD\x00X=LD_PRELOAD=/x.so\x00LD_AUDITOR=1\x00", 0, ""},
	} {
		got := LoaderEnvOf([]byte(tc.env))
		if got != tc.want || got.String() != tc.name {
			t.Errorf("%q: %#x %q, want %#x %q", tc.env, uint8(got), got, uint8(tc.want), tc.name)
		}
	}
	if s := (LoaderPreload | LoaderSecure).String(); s != "" {
		t.Errorf("secure-exec with LD_PRELOAD reported as %q: the loader ignored it", s)
	}
	if s := LoaderTruncated.String(); s != "truncated" {
		t.Errorf("truncated: %q", s)
	}
}
