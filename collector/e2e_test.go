package collector

// End-to-end tests: the real binary ($FSMON_BINARY, built by `make build`)
// as root, scraped over HTTP(S) the way Prometheus does.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/crypto/bcrypt"

	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

func TestE2EDeniedCounter(t *testing.T) {
	testroot.Require(t)
	bin := testroot.Binary(t)

	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	marker := filepath.Join(dir, "marker")
	for _, f := range []string{secret, marker} {
		if err := os.WriteFile(f, []byte("s3cret\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := catFile(f); err != nil {
			t.Fatalf("cat before the daemon runs: %v: %s", err, out) // the test itself is broken
		}
	}
	cfg := writeFile(t, dir, "fsmon.yml", fmt.Sprintf(`profiles:
  - name: e2e
    host: true
    mode: protect
    filters:
      - name: secret
        path: %q
        behavior: block
        allow: [/nonexistent]
      - name: marker
        path: %q
        behavior: block
        allow: [/nonexistent]
`, secret, marker))

	d := startDaemon(t, bin, "--config.file="+cfg)
	base := "http://" + d.addr
	client := &http.Client{Timeout: 5 * time.Second}
	d.waitReady(t, client, base+"/-/ready", nil)
	if code, _ := get(t, client, base+"/-/healthy", nil); code != http.StatusOK {
		t.Errorf("/-/healthy: %d, want 200", code)
	}

	series := `fsmon_access_denied_total{container="host",filter="secret",namespace="",profile="e2e"}`
	// namespace is empty outside pods: the exposition writes it so.
	labels := map[string]string{"profile": "e2e", "filter": "secret", "container": "host", "namespace": ""}
	text := scrape(t, client, base+"/metrics", nil)
	before := sample(t, text, "fsmon_access_denied_total", labels)

	mustBeDenied(t, secret)
	// The counter is incremented on the report goroutine, after the
	// answer. A denied open of the marker file, made once the secret's
	// was answered, is reported after it through the engine's one FIFO
	// report queue: once the marker is counted, every count the secret's
	// open will ever add is in, so the counter must be exactly +1.
	mustBeDenied(t, marker)
	markerLabels := map[string]string{"profile": "e2e", "filter": "marker", "container": "host", "namespace": ""}
	deadline := time.Now().Add(10 * time.Second)
	for sample(t, text, "fsmon_access_denied_total", markerLabels) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the marker's denied open not counted within 10s")
		}
		time.Sleep(50 * time.Millisecond)
		text = scrape(t, client, base+"/metrics", nil)
	}
	if m := sample(t, text, "fsmon_access_denied_total", markerLabels); m != 1 {
		t.Errorf("marker counted %v times, want 1", m)
	}
	if after := sample(t, text, "fsmon_access_denied_total", labels); after != before+1 {
		t.Fatalf("%s went from %v to %v after one denied open, want +1", series, before, after)
	}

	t.Run("promtool check metrics on a real scrape", func(t *testing.T) {
		promtoolCheck(t, testroot.RequireCommand(t, "promtool"), text)
	})
}

func TestE2ETLSBasicAuth(t *testing.T) {
	testroot.Require(t)
	bin := testroot.Binary(t)

	dir := t.TempDir()
	watched := writeFile(t, dir, "watched", "x\n")
	cfg := writeFile(t, dir, "fsmon.yml", fmt.Sprintf(`profiles:
  - name: tls
    host: true
    mode: monitor
    filters:
      - name: watched
        path: %q
`, watched))
	certPEM, keyPEM := selfSignedCert(t)
	certFile := writeFile(t, dir, "cert.pem", string(certPEM))
	keyFile := writeFile(t, dir, "key.pem", string(keyPEM))
	const user, password = "prometheus", "correct horse battery staple"
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if err != nil {
		t.Fatal(err)
	}
	webCfg := writeFile(t, dir, "web.yml", fmt.Sprintf(`tls_server_config:
  cert_file: %q
  key_file: %q
basic_auth_users:
  %s: '%s'
`, certFile, keyFile, user, hash))

	d := startDaemon(t, bin, "--config.file="+cfg, "--web.config.file="+webCfg)
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(certPEM) {
		t.Fatal("bad test certificate")
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
	}}
	base := "https://" + d.addr
	right := &[2]string{user, password}
	d.waitReady(t, client, base+"/-/ready", right)

	for _, tc := range []struct {
		name  string
		creds *[2]string
		want  int
	}{
		{"no credentials", nil, http.StatusUnauthorized},
		{"wrong password", &[2]string{user, "wrong"}, http.StatusUnauthorized},
		{"unknown user", &[2]string{"mallory", password}, http.StatusUnauthorized},
		{"right password", right, http.StatusOK},
	} {
		code, body := get(t, client, base+"/metrics", tc.creds)
		if code != tc.want {
			t.Errorf("%s: /metrics over HTTPS: %d, want %d", tc.name, code, tc.want)
		}
		if code == http.StatusOK && !strings.Contains(string(body), "fsmon_build_info{") {
			t.Errorf("%s: scrape has no fsmon_build_info:\n%s", tc.name, body)
		}
	}

	// Plain HTTP to the TLS port must not serve metrics.
	plain := &http.Client{Timeout: 5 * time.Second}
	req, _ := http.NewRequest(http.MethodGet, "http://"+d.addr+"/metrics", nil)
	req.SetBasicAuth(user, password)
	if resp, err := plain.Do(req); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("plain HTTP to the TLS listener served /metrics")
		}
	}
}

// daemon is a running fsmon_exporter, stopped with SIGTERM at cleanup.
type daemon struct {
	addr   string
	stderr testroot.Buffer
	done   chan struct{}
	err    error // of Wait, once done is closed
}

func startDaemon(t *testing.T, bin string, args ...string) *daemon {
	t.Helper()
	d := &daemon{addr: testroot.FreeAddr(t), done: make(chan struct{})}
	args = append(args, "--web.listen-address="+d.addr, "--log.level=debug", "--state.dir="+t.TempDir())
	cmd := exec.Command(bin, args...)
	cmd.Stdout = io.Discard // events as JSON lines; not what these tests check
	cmd.Stderr = &d.stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	go func() { d.err = cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		select {
		case <-d.done:
			t.Errorf("fsmon_exporter exited before the test ended: %v", d.err)
		default:
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-d.done:
				if d.err != nil {
					t.Errorf("fsmon_exporter on SIGTERM: %v, want exit 0", d.err)
				}
			case <-time.After(15 * time.Second):
				_ = cmd.Process.Kill()
				<-d.done
				t.Errorf("fsmon_exporter did not exit within 15s of SIGTERM")
			}
		}
		if t.Failed() {
			t.Logf("fsmon_exporter %s\nstderr:\n%s", strings.Join(args, " "), d.stderr.String())
		}
	})
	return d
}

// waitReady polls url until it answers 200 (every mark placed), failing
// at once if the daemon exits.
func (d *daemon) waitReady(t *testing.T, c *http.Client, url string, creds *[2]string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	last := "no answer"
	for time.Now().Before(deadline) {
		select {
		case <-d.done:
			t.Fatalf("fsmon_exporter exited while starting: %v", d.err)
		default:
		}
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if creds != nil {
			req.SetBasicAuth(creds[0], creds[1])
		}
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s not ready within 30s: last answer %s", url, last)
}

func get(t *testing.T, c *http.Client, url string, creds *[2]string) (int, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if creds != nil {
		req.SetBasicAuth(creds[0], creds[1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	return resp.StatusCode, body
}

func scrape(t *testing.T, c *http.Client, url string, creds *[2]string) []byte {
	t.Helper()
	code, body := get(t, c, url, creds)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d\n%s", url, code, body)
	}
	return body
}

// sample is the value of the series of name with exactly labels in a text
// exposition; 0 when absent, as a counter that has not been touched yet.
func sample(t *testing.T, text []byte, name string, labels map[string]string) float64 {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(text))
	if err != nil {
		t.Fatalf("parsing the scrape: %v", err)
	}
	mf, ok := mfs[name]
	if !ok {
		return 0
	}
	for _, m := range mf.GetMetric() {
		got := map[string]string{}
		for _, lp := range m.GetLabel() {
			got[lp.GetName()] = lp.GetValue()
		}
		if fmt.Sprint(got) == fmt.Sprint(labels) {
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// catFile runs cat in a child process, in the C locale so the error text
// is known.
func catFile(path string) ([]byte, error) {
	cmd := exec.Command("cat", path)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	return cmd.CombinedOutput()
}

// mustBeDenied fails t unless cat's open of path failed with EPERM, the
// answer of a fanotify deny: exit 1, "Operation not permitted" and none
// of the file. Any other failure (ENOENT, EACCES, a crash) is no deny.
func mustBeDenied(t *testing.T, path string) {
	t.Helper()
	out, err := catFile(path)
	want := "cat: " + path + ": Operation not permitted\n"
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || string(out) != want {
		t.Fatalf("cat %s under protect: err=%v output=%q, want exit 1 and %q (EPERM)", path, err, out, want)
	}
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// selfSignedCert returns a certificate for 127.0.0.1 and its key, PEM.
func selfSignedCert(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "fsmon_exporter e2e"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}
