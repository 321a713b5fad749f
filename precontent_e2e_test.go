package main

import "testing"

// --protect.arm-filesystems (the default) arms the file system of a
// protect-mode block filter's file: one file system mark, counted in
// fsmon_fanotify_marks; --no-protect.arm-filesystems places none. The
// gauge of files without pre-content events lists the filter at 0 (the
// test's file is on ext4).
func TestArmFilesystemsFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{{nil, "1"}, {[]string{"--no-protect.arm-filesystems"}, "0"}} {
		secret := secretFile(t)
		d := startDaemon(t, append([]string{"--config.file=" + protectConfig(t, secret)}, tc.args...)...)
		if got := d.metric(t, `fsmon_fanotify_marks{type="filesystem"}`); got != tc.want {
			t.Errorf("%v: fsmon_fanotify_marks{type=\"filesystem\"} = %q, want %s", tc.args, got, tc.want)
		}
		if got := d.metric(t, `fsmon_protected_files_without_precontent{filter="secret",profile="e2e"}`); got != "0" {
			t.Errorf("%v: fsmon_protected_files_without_precontent = %q, want 0", tc.args, got)
		}
		mustBeDenied(t, secret, "protect mode")
	}
}
