package test

import (
	"regexp"
	"strings"
	"testing"
)

// instructions is a Dockerfile's instructions (continuations joined,
// comments and blank lines dropped), split into stages at each FROM.
func instructions(text string) [][]string {
	var stages [][]string
	var cur string
	for _, l := range strings.Split(text, "\n") {
		t := strings.TrimSpace(l)
		if cur == "" && (t == "" || strings.HasPrefix(t, "#")) {
			continue
		}
		if strings.HasSuffix(t, "\\") {
			cur += strings.TrimSuffix(t, "\\") + " "
			continue
		}
		ins := strings.Join(strings.Fields(cur+t), " ")
		cur = ""
		if strings.HasPrefix(strings.ToUpper(ins), "FROM ") {
			stages = append(stages, nil)
		}
		if len(stages) > 0 {
			stages[len(stages)-1] = append(stages[len(stages)-1], ins)
		}
	}
	return stages
}

var copyFrom = regexp.MustCompile(`^COPY (--from=\S+ )?(\S+) (\S+)$`)

// TestDockerfilesAgree: the final stage of the multi-stage Dockerfile
// (registries reachable) and deploy/image/Dockerfile (`make image`, no
// registry) make the same image: from scratch, the same files at the same
// paths, the same user, port, entry point and command.
func TestDockerfilesAgree(t *testing.T) {
	multi := instructions(string(readFile(t, "Dockerfile")))
	local := instructions(string(readFile(t, "deploy", "image", "Dockerfile")))
	if len(multi) < 2 || len(local) != 1 {
		t.Fatalf("Dockerfile has %d stages (want a build stage and a final one), deploy/image/Dockerfile %d (want 1)", len(multi), len(local))
	}
	final := multi[len(multi)-1]
	norm := func(ins []string) []string {
		var out []string
		for _, i := range ins {
			if m := copyFrom.FindStringSubmatch(i); m != nil {
				// Where a file comes from differs; where it goes must not.
				i = "COPY " + m[3]
			}
			out = append(out, i)
		}
		return out
	}
	a, b := norm(final), norm(local[0])
	if strings.Join(a, "\n") != strings.Join(b, "\n") {
		t.Errorf("the final stages differ:\nDockerfile:\n  %s\ndeploy/image/Dockerfile:\n  %s", strings.Join(a, "\n  "), strings.Join(b, "\n  "))
	}
	if a[0] != "FROM scratch" {
		t.Errorf("final stage %q: want FROM scratch (nothing in the image but the binary, its CA bundle and its configuration)", a[0])
	}
	for _, want := range []string{"COPY /etc/ssl/certs/ca-certificates.crt", "COPY " + configPath, "USER 0:0", `CMD ["--config.file=` + configPath + `"]`} {
		found := false
		for _, i := range a {
			found = found || i == want
		}
		if !found {
			t.Errorf("final stage lacks %s", want)
		}
	}
	// Every file the final stage takes from the build stage is made there.
	build := strings.Join(multi[0], "\n")
	for _, i := range final {
		if m := copyFrom.FindStringSubmatch(i); m != nil && m[1] != "" {
			base := m[2][strings.LastIndex(m[2], "/")+1:]
			if !strings.Contains(build, base) {
				t.Errorf("%s: the build stage makes no %s", i, base)
			}
		}
	}
}
