package test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// envValue is a value the Makefile passes to the tests (an image's name):
// unset, the test skips, but under CI, where `make test` sets it.
func envValue(t *testing.T, name, hint string) string {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not set; run the tests through `make test` (%s)", name, hint)
		}
		t.Skipf("%s is not set: run through `make test` (%s)", name, hint)
	}
	return v
}

// run runs a command and returns its combined output; the test fails
// when it fails.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := runErr(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func runErr(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

// poll calls cond until it holds or the deadline passes (a generous
// overall deadline on a loaded machine; never a fixed wait).
func poll(t *testing.T, within time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s; last: %s", what, within, state)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func httpStatus(u string) (int, string) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(u)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 64<<10)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return resp.StatusCode, b.String()
}

type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

// promQuery runs an instant query against a Prometheus at addr.
func promQuery(addr, q string) ([]promSample, error) {
	code, body := httpStatus("http://" + addr + "/api/v1/query?query=" + url.QueryEscape(q))
	if code != 200 {
		return nil, fmt.Errorf("query %s: HTTP %d: %s", q, code, body)
	}
	var r struct {
		Status string `json:"status"`
		Data   struct {
			Result []promSample `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		return nil, err
	}
	return r.Data.Result, nil
}
