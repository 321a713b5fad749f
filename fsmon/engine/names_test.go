package engine

import (
	"fmt"
	"path/filepath"
	"testing"
)

// TestNewlineInANameIsCovered: a file whose name holds a newline,
// existing at start or made later, is covered by a regex filter like any
// other (Go's "." does not match a newline unless told).
func TestNewlineInANameIsCovered(t *testing.T) {
	dir := t.TempDir()
	before := filepath.Join(dir, "old\nkey.pem")
	writeFile(t, before, "k")
	start(t, fmt.Sprintf(`
profiles:
  - name: t
    host: true
    mode: protect
    filters:
      - name: pem
        path: %s
        regex: '.*\.pem'
        behavior: block
        allow: [/usr/bin/head]
`, dir))
	mustDeny(t, cmd(t, "cat", before))
	later := filepath.Join(dir, "new\n.pem")
	writeFile(t, later, "k")
	mustDeny(t, cmd(t, "cat", later))
	mustAllow(t, cmd(t, "head", later))
}
