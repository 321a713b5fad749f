package engine

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

// selectorConfig blocks the container's /etc/shadow to everyone but head
// in the containers the selector picks.
const selectorConfig = `
profiles:
  - name: picked
    containers: %s
    mode: protect
    filters:
      - name: shadow
        path: /etc/shadow
        behavior: block
        allow: [head]
`

// checkSelected asserts that the engine watches picked and passes over
// each of left; a deny in picked, made after the opens in the others,
// proves that those made no report.
func checkSelected(t *testing.T, h *harness, picked *fakeContainer, left ...*fakeContainer) {
	t.Helper()
	for _, c := range left {
		waitPassedOver(t, h, c)
	}
	if picked != nil {
		waitGroup(t, h, picked, true)
	}
	for _, g := range h.Snapshot().Groups {
		for _, c := range left {
			if g.ContainerID == c.id {
				t.Fatalf("%s is watched though the selector leaves it: %+v", c.name, g)
			}
		}
	}
	for _, c := range left {
		mustAllow(t, c.exec(t, "cat", "/etc/shadow"))
	}
	if picked == nil {
		return
	}
	mustDeny(t, picked.exec(t, "cat", "/etc/shadow"))
	h.rec.noneBefore(t, "of a container the selector leaves", func(ev *fsmon.Event) bool { return ev.Container.ID != picked.id },
		"deny in "+picked.name, func(ev *fsmon.Event) bool {
			return ev.Kind == fsmon.KindDenied && ev.Container.ID == picked.id && ev.Path == "/etc/shadow" && ev.Profile == "picked"
		})
}

// TestContainerSelectedByID: `id:` matches the full id, the short id
// (its first 12 characters) as it is, and any other prefix only as a
// glob. Two containers whose ids share their first six digits.
func TestContainerSelectedByID(t *testing.T) {
	testroot.Require(t)
	base := randomID(t)
	idA := base[:6] + "a" + base[7:]
	idB := base[:6] + "b" + base[7:]
	var cs []*fakeContainer
	for i, id := range []string{idA, idB} {
		root := busyboxRoot(t)
		writeFile(t, filepath.Join(root, "etc", "shadow"), "secret\n")
		cs = append(cs, runContainer(t, containerSpec{root: root, hostname: fmt.Sprintf("by-id-%d", i), shape: cgroupV1Docker, id: id}))
	}
	a, b := cs[0], cs[1]
	for _, tc := range []struct {
		name, selector string
		picked         *fakeContainer // nil: neither
	}{
		{"full id", idA, a},
		{"short id", idA[:12], a},
		{"glob of a prefix", idA[:7] + "*", a},
		{"glob of the other's prefix", idB[:7] + "*", b},
		{"prefix that is not the short id", idA[:8], nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := startScanning(t, scanForTests, fmt.Sprintf(selectorConfig, fmt.Sprintf("{id: '%s'}", tc.selector)))
			var left []*fakeContainer
			for _, c := range cs {
				if c != tc.picked {
					left = append(left, c)
				}
			}
			checkSelected(t, h, tc.picked, left...)
		})
	}
}

// TestContainerSelectedByImage: `image:` matches the image the runtime's
// state file names (Docker's config.v2.json, read from the host's root),
// and so does the name there. A container without state files has no
// image: an image selector never picks it.
func TestContainerSelectedByImage(t *testing.T) {
	testroot.Require(t)
	launch := func(host, state string) *fakeContainer {
		root := busyboxRoot(t)
		writeFile(t, filepath.Join(root, "etc", "shadow"), "secret\n")
		return runContainer(t, containerSpec{root: root, hostname: host, shape: cgroupV2Docker, dockerState: state})
	}
	web := launch("img-web", fmt.Sprintf(`{"Name":"/%s-from-state","Config":{"Image":"registry.local/%s/web:1.27"}}`, testRun, testRun))
	db := launch("img-db", fmt.Sprintf(`{"Name":"/%s-db","Config":{"Image":"registry.local/%s/db:17"}}`, testRun, testRun))
	none := launch("img-none", noStateFile)
	h := startScanning(t, scanForTests, fmt.Sprintf(selectorConfig, "{image: 'registry.local/{run}/web:*'}"))
	g := waitGroup(t, h, web, true)
	if want := testRun + "-from-state"; g.Name != want {
		t.Errorf("group name %q, want the state file's %q", g.Name, want)
	}
	checkSelected(t, h, web, db, none)
}

// TestContainerNotNamedByHostname: a container no runtime knows is
// named by its short id, never by its HOSTNAME, which it controls: a
// profile selecting the name it claims leaves it, one selecting its
// short id picks it, and its events carry that.
func TestContainerNotNamedByHostname(t *testing.T) {
	testroot.Require(t)
	root := busyboxRoot(t)
	writeFile(t, filepath.Join(root, "etc", "shadow"), "secret\n")
	liar := runContainer(t, containerSpec{root: root, hostname: "liar", shape: cgroupV2Docker, dockerState: noStateFile})
	h := startScanning(t, scanForTests, fmt.Sprintf(selectorConfig, "{name: '{run}-liar'}"))
	checkSelected(t, h, nil, liar)
	h.stop()

	h = startScanning(t, scanForTests, fmt.Sprintf(selectorConfig, "{name: '"+liar.id[:12]+"'}"))
	if g := waitGroup(t, h, liar, true); g.Name != liar.id[:12] {
		t.Errorf("group named %q, want the short id", g.Name)
	}
	mustDeny(t, liar.exec(t, "cat", "/etc/shadow"))
	h.rec.waitFor(t, "deny named by the short id", func(ev *fsmon.Event) bool {
		return ev.Kind == fsmon.KindDenied && ev.Container.ID == liar.id && ev.Container.Name == liar.id[:12] && ev.Container.Image == ""
	})
}
