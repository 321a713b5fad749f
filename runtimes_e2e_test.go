package main

// End-to-end tests with real container runtimes: Docker and podman
// (runc) containers named, selected and denied by the daemon. `make
// test` installs the runtimes, starts their daemons without systemd and
// builds the image these tests run (tools/runtimes/runtimes.sh); the CRI
// test of Kubernetes pods is in cri_e2e_test.go.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

// testImage is the image runtimes.sh builds in every runtime: a busybox
// root with /etc/fsmon-secret, whose command sleeps.
const testImage = "fsmon-test/busybox:local"

// runID tells this run's containers, images and namespaces from those
// of other test processes on the machine.
var runID = func() string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return "e" + hex.EncodeToString(b)
}()

// runtimeCLI drives one runtime through its command line, as a user
// does.
type runtimeCLI struct {
	name string
	bin  string
	// run are the arguments of `run -d` before the name and image.
	run []string
	// imageRef is how the runtime's state names an image the test
	// tagged as ref.
	imageRef func(ref string) string
	// rm removes a container at once (its command, a sleep as PID 1,
	// ignores SIGTERM).
	rm []string
}

var (
	dockerCLI = runtimeCLI{name: "docker", bin: "docker", run: []string{"run", "-d"},
		imageRef: func(r string) string { return r }, rm: []string{"rm", "-f"}}
	// crun fails on the cgroup layout of the test machines: runc, with
	// limits the runtime does not raise past the machine's.
	podmanCLI = runtimeCLI{name: "podman", bin: "podman",
		run:      []string{"--runtime", "runc", "run", "-d", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"},
		imageRef: func(r string) string { return "localhost/" + r }, rm: []string{"rm", "-f", "-t", "0"}}
)

// need makes the test unavailable unless the runtime answers and has
// the test image.
func (rt runtimeCLI) need(t *testing.T) {
	t.Helper()
	testroot.Require(t)
	testroot.RequireCommand(t, rt.bin)
	if out, err := rt.cmd(t, "image", "inspect", testImage); err != nil {
		testroot.Unavailable(t, "%s has no %s (make test starts the runtimes and builds it: tools/runtimes/runtimes.sh up): %v %s", rt.name, testImage, err, out)
	}
}

func (rt runtimeCLI) cmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, rt.bin, args...).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s %v hung: %s", rt.bin, args, out)
	}
	return strings.TrimSpace(string(out)), err
}

func (rt runtimeCLI) must(t *testing.T, args ...string) string {
	t.Helper()
	out, err := rt.cmd(t, args...)
	if err != nil {
		t.Fatalf("%s %v: %v: %s", rt.bin, args, err, out)
	}
	return out
}

// tag gives the test image a name of this run's, so that an image
// selector picks this run's containers only; removed at the end.
func (rt runtimeCLI) tag(t *testing.T) string {
	t.Helper()
	ref := "fsmon-test/busybox:" + runID
	rt.must(t, "tag", testImage, ref)
	t.Cleanup(func() { rt.cmd(t, "rmi", ref) })
	return ref
}

// start runs a container of image named name; it is removed at the end.
// It returns the full id.
func (rt runtimeCLI) start(t *testing.T, name, image string) string {
	t.Helper()
	out := rt.must(t, append(append([]string{}, rt.run...), "--name", name, image)...)
	id := out[strings.LastIndexByte(out, '\n')+1:]
	if len(id) != 64 {
		t.Fatalf("%s run printed %q, not an id", rt.bin, out)
	}
	t.Cleanup(func() { rt.cmd(t, append(rt.rm, name)...) })
	return id
}

// mustDenyIn runs cat on the file inside the container and fails unless
// the open failed with EPERM.
func (rt runtimeCLI) mustDenyIn(t *testing.T, name, file string) {
	t.Helper()
	out, err := rt.cmd(t, "exec", name, "cat", file)
	if err == nil || !strings.Contains(out, "Operation not permitted") {
		t.Fatalf("cat %s in %s: %v %q, want EPERM", file, name, err, out)
	}
}

func (rt runtimeCLI) mustReadIn(t *testing.T, name, file string) {
	t.Helper()
	if out, err := rt.cmd(t, "exec", name, "cat", file); err != nil || out != "runtime secret" {
		t.Fatalf("cat %s in %s: %v %q, want it read", file, name, err, out)
	}
}

// runtimeConfig denies /etc/fsmon-secret in the containers of one name
// and in those of one image; other containers may read it. by-name has
// two filters: it still covers one group.
const runtimeConfig = `
profiles:
  - name: by-name
    containers: {name: '%s'}
    mode: protect
    filters:
      - name: secret
        path: /etc/fsmon-secret
        behavior: block
        allow: [head]
      - name: busybox
        path: /bin/busybox
  - name: by-image
    containers: {image: '%s'}
    mode: protect
    filters:
      - name: secret
        path: /etc/fsmon-secret
        behavior: block
        allow: [head]
`

func TestDockerContainers(t *testing.T) { testRuntime(t, dockerCLI) }

func TestPodmanContainers(t *testing.T) { testRuntime(t, podmanCLI) }

// testRuntime: a profile by the runtime's name of a container and one by
// its image deny inside the container, with its id, name and image in
// the event; a container started after the daemon is picked up; one
// removed is cleaned up; a container of neither is left alone.
func testRuntime(t *testing.T, rt runtimeCLI) {
	rt.need(t)
	image := rt.tag(t)
	named := runID + "-" + rt.name + "-web"
	namedID := rt.start(t, named, testImage)
	other := runID + "-" + rt.name + "-other"
	rt.start(t, other, testImage)

	cfg := filepath.Join(t.TempDir(), "fsmon.yml")
	writeConfig(t, cfg, fmt.Sprintf(runtimeConfig, named, rt.imageRef(image)))
	d := startDaemon(t, "--config.file="+cfg, "--containers.scan-interval=100ms", "--log.level=debug")

	// By name, running before the daemon.
	d.waitLog(t, 1, `msg="watching container"`, "container="+named, "id="+namedID)
	// No container of the image runs yet: the profile says so.
	d.waitLog(t, 1, `msg="profile covers no group`, "profile=by-image")
	waitMetric(t, d, `fsmon_profile_groups{profile="by-image"}`, "0")
	waitMetric(t, d, `fsmon_profile_groups{profile="by-name"}`, "1")
	rt.mustDenyIn(t, named, "/etc/fsmon-secret")
	ev := d.event(t, "denied in "+named, func(m map[string]any) bool {
		return m["event"] == "denied" && m["container.id"] == namedID
	})
	if ev["container.name"] != named || ev["container.image.name"] != rt.imageRef(testImage) || ev["profile"] != "by-name" ||
		ev["file.path"] != "/etc/fsmon-secret" {
		t.Errorf("event of %s: %v", named, ev)
	}

	// By image, started after the daemon.
	late := runID + "-" + rt.name + "-late"
	lateID := rt.start(t, late, image)
	d.waitLog(t, 1, `msg="watching container"`, "container="+late, "id="+lateID)
	d.waitLog(t, 1, `msg="profile covers groups"`, "profile=by-image", "groups=1")
	waitMetric(t, d, `fsmon_profile_groups{profile="by-image"}`, "1")
	rt.mustDenyIn(t, late, "/etc/fsmon-secret")
	ev = d.event(t, "denied in "+late, func(m map[string]any) bool {
		return m["event"] == "denied" && m["container.id"] == lateID
	})
	if ev["container.name"] != late || ev["container.image.name"] != rt.imageRef(image) || ev["profile"] != "by-image" {
		t.Errorf("event of %s: %v", late, ev)
	}

	// Neither: not watched, its file open to all.
	rt.mustReadIn(t, other, "/etc/fsmon-secret")

	// Removed: its group goes.
	rt.must(t, append(rt.rm, late)...)
	d.waitLog(t, 1, `msg="container gone"`, "container="+late, "id="+lateID)
	d.waitLog(t, 2, `msg="profile covers no group`, "profile=by-image")
	waitMetric(t, d, `fsmon_profile_groups{profile="by-image"}`, "0")
	rt.mustDenyIn(t, named, "/etc/fsmon-secret")
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, m := range d.lines {
		if m["container.name"] == other {
			t.Errorf("event of a container no profile selects: %v", m)
		}
	}
}
