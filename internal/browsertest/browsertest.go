// Package browsertest runs Debian's chromium headless for a test and drives
// it through the DevTools protocol with github.com/chromedp/chromedp: New
// starts a browser with a fresh profile in the test's temporary directory
// and returns the chromedp context of its first tab; the browser closes, and
// every process it started is gone, when the test ends. Do, Run and
// Screenshot bound each step with ActionTimeout, so a hung page fails the
// test instead of hanging the run; VirtualAuthenticator gives the tab a
// virtual passkey authenticator (WebAuthn) for sign-in tests on localhost;
// the option TrustKey makes it accept a test server's TLS certificate.
//
// When chromium is not installed the test is skipped, unless the CI
// environment variable is set: then it fails (scripts/ensure-test-deps.sh
// installs it).
//
// Screenshots are test artifacts: they go under the directory named by
// $BROWSERTEST_ARTIFACTS (a KEYFRAME_* name would be refused by the agent's
// configuration loader), else under keyframe-test-artifacts in the system's
// temporary directory, in a directory per test; the path is logged.
package browsertest

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/webauthn"
	"github.com/chromedp/chromedp"

	"github.com/keyframe-cam/keyframe/internal/atomicfile"
)

// Where the binary is, and where screenshots go.
const (
	// DebianBinary is the launcher of Debian's chromium package.
	DebianBinary = "/usr/bin/chromium"
	// ArtifactsEnv names the environment variable holding the directory
	// under which Screenshot saves its files.
	ArtifactsEnv = "BROWSERTEST_ARTIFACTS"
	// defaultArtifacts is the directory under os.TempDir() used when
	// ArtifactsEnv is not set.
	defaultArtifacts = "keyframe-test-artifacts"
)

// Time bounds. Each only turns a broken browser or a hung page into a test
// failure instead of a hang; none is an assertion about speed.
const (
	// ActionTimeout bounds each Do, Run, Screenshot and VirtualAuthenticator.
	ActionTimeout = 30 * time.Second
	// startTimeout bounds the start of the browser (a cold start on a busy
	// 2-core machine takes about a second).
	startTimeout = 60 * time.Second
	// closeTimeout bounds the graceful close at cleanup, and then again the
	// wait for the processes after they were killed.
	closeTimeout = 10 * time.Second
)

// Width and height of the window, so screenshots have a stable size.
const (
	windowWidth  = 1280
	windowHeight = 900
)

// Binary returns the path of the chromium binary, or "" if not found:
// Debian's launcher, else a chromium on $PATH.
func Binary() string {
	if fi, err := os.Stat(DebianBinary); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
		return DebianBinary
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	return ""
}

// haveBinary reports whether bin is set; if not, it skips t, or fails it
// when ci (the CI environment variable) is set.
func haveBinary(t testing.TB, bin, ci string) bool {
	t.Helper()
	if bin != "" {
		return true
	}
	const msg = "browsertest: chromium is not installed (Debian: apt-get install --no-install-recommends chromium; scripts/ensure-test-deps.sh does it)"
	if ci != "" {
		t.Fatal(msg + "; CI is set, so this is a failure")
		return false
	}
	t.Skip(msg + "; skipping (set CI to make this a failure)")
	return false
}

// flags returns the allocator options: chromedp's defaults (among them
// --headless, --no-first-run, --disable-background-networking,
// --disable-sync, --disable-extensions, --disable-dev-shm-usage) and what
// this machine and a test need besides: no sandbox (tests run as root in
// containers), no GPU, no QUIC, no component updates fetched, a fresh
// profile and configuration home under dir (so that even the crash
// handler's database, which Chromium keeps in $CHROME_CONFIG_HOME, else in
// ~/.config, stays in the test's directory), a fixed window size, and the
// browser's output to out.
func flags(bin, dir string, out *logBuffer, o *options) []chromedp.ExecAllocatorOption {
	f := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.NoSandbox,
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.UserDataDir(filepath.Join(dir, "profile")),
		chromedp.Env("CHROME_CONFIG_HOME="+filepath.Join(dir, "config")),
		chromedp.WindowSize(windowWidth, windowHeight),
		chromedp.CombinedOutput(out),
	)
	if len(o.trustSPKI) > 0 {
		f = append(f, chromedp.Flag("ignore-certificate-errors-spki-list", strings.Join(o.trustSPKI, ",")))
	}
	return f
}

// An Option changes how New starts the browser.
type Option func(*options)

// options are what the Options set.
type options struct {
	trustSPKI []string // base64 SHA-256 of the trusted public keys
}

// TrustKey makes the browser accept a TLS server certificate whose public
// key is spki (DER SubjectPublicKeyInfo, x509.Certificate's
// RawSubjectPublicKeyInfo), such as a test server's self-signed one,
// whatever its issuer: Chromium's --ignore-certificate-errors-spki-list
// (honoured with a --user-data-dir, which New always gives). Certificates of
// any other key are checked as usual, so a test that trusts its own server
// still sees every other TLS error.
func TrustKey(spki []byte) Option {
	sum := sha256.Sum256(spki)
	return func(o *options) { o.trustSPKI = append(o.trustSPKI, base64.StdEncoding.EncodeToString(sum[:])) }
}

// browser is one running chromium of a test.
type browser struct {
	ctx context.Context // the first tab's chromedp context
	dir string          // holds its profile and configuration, unique to it
}

// New starts a headless chromium for t and returns the chromedp context of
// its first tab. At t's cleanup the browser is closed (gracefully, else
// killed) and no process it started is left. Use Do, Run and Screenshot on
// the context; a chromedp call of one's own should derive a context with a
// timeout from it.
func New(t testing.TB, opts ...Option) context.Context {
	t.Helper()
	return start(t, opts...).ctx
}

// start is New, also returning the browser's directory (the tests look for
// processes by it).
func start(t testing.TB, opts ...Option) *browser {
	t.Helper()
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	bin := Binary()
	if !haveBinary(t, bin, os.Getenv("CI")) {
		return nil
	}
	// The directory outlives the browser's processes: registered first, it
	// is removed after the cleanup below has waited for them.
	dir := t.TempDir()
	// Not t.Context(): that is cancelled before the cleanup, which would kill
	// the browser instead of closing it.
	log := &logBuffer{}
	allocCtx, allocCancel := chromedp.NewExecAllocator(context.Background(), flags(bin, dir, log, &o)...)
	ctx, _ := chromedp.NewContext(allocCtx, chromedp.WithErrorf(log.printf))
	t.Cleanup(func() {
		stop(t, ctx, allocCancel, dir)
		if t.Failed() {
			t.Logf("browsertest: the browser's output and chromedp's errors:\n%s", log.String())
		}
	})

	// The first Run starts the browser, which lives as long as the context
	// of that call: so it gets ctx itself, and a timer bounds the wait.
	began := time.Now()
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(ctx) }()
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case err := <-started:
		if err != nil {
			t.Fatalf("browsertest: start %s: %v", bin, err)
		}
	case <-timer.C:
		allocCancel() // kills the process
		t.Fatalf("browsertest: %s did not start within %s", bin, startTimeout)
	}
	t.Logf("browsertest: %s started in %s", bin, time.Since(began).Round(time.Millisecond))
	return &browser{ctx: ctx, dir: dir}
}

// NewBrowserContext opens a tab in a new browser context of ctx's browser
// (an incognito-like profile: its own cookies, storage and cache), for a
// second person using the same browser, and returns its chromedp context.
// The context and its tab close at t's cleanup (before the browser).
func NewBrowserContext(t testing.TB, ctx context.Context) context.Context {
	t.Helper()
	nctx, cancel := chromedp.NewContext(ctx, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	// As in start: the first Run makes the tab, which lives as long as the
	// context of that call, so it gets nctx itself and a timer bounds it.
	made := make(chan error, 1)
	go func() { made <- chromedp.Do(nctx) }()
	timer := time.NewTimer(ActionTimeout)
	defer timer.Stop()
	select {
	case err := <-made:
		if err != nil {
			t.Fatalf("browsertest: new browser context: %v", err)
		}
	case <-timer.C:
		cancel()
		t.Fatalf("browsertest: new browser context not made within %s", ActionTimeout)
	}
	return nctx
}

// stop closes the browser gracefully, waits for its process, then kills any
// process still naming dir (a renderer, a utility process or a crash
// handler that outlived it) and waits for those to go too.
func stop(t testing.TB, ctx context.Context, allocCancel context.CancelFunc, dir string) {
	t.Helper()
	cctx, cancel := context.WithTimeout(ctx, closeTimeout)
	err := chromedp.Cancel(cctx)
	cancel()
	if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		t.Logf("browsertest: close: %v", err)
	}
	// allocCancel cancels the process's context (killing it if the close
	// did not end it) and waits for it and its output.
	waited := make(chan struct{})
	go func() { allocCancel(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(closeTimeout):
		t.Errorf("browsertest: the browser did not exit %s after it was closed and killed", closeTimeout)
	}
	if pids := killUsing(dir, closeTimeout); len(pids) > 0 {
		t.Logf("browsertest: killed processes left behind by the browser: %v", pids)
	}
	if pids, err := processesUsing(dir); err == nil && len(pids) > 0 {
		t.Errorf("browsertest: processes %v of the browser in %s are still running", pids, dir)
	}
}

// Do runs the steps on ctx's tab within ActionTimeout; an error or the
// timeout fails t.
func Do(t testing.TB, ctx context.Context, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	Run(t, ctx, chromedp.Steps(steps...))
}

// Run runs the action on ctx's tab within ActionTimeout and returns its
// value; an error or the timeout fails t.
func Run[T any](t testing.TB, ctx context.Context, a chromedp.Action[T]) T {
	t.Helper()
	v, err := RunErr(ctx, a)
	if err != nil {
		t.Fatalf("browsertest: %v", err)
	}
	return v
}

// RunErr runs the action on ctx's tab within ActionTimeout and returns its
// value and error, for a test that expects the action to fail.
func RunErr[T any](ctx context.Context, a chromedp.Action[T]) (T, error) {
	return runWithin(ctx, ActionTimeout, a)
}

// runWithin runs the action on ctx's tab within timeout.
func runWithin[T any](ctx context.Context, timeout time.Duration, a chromedp.Action[T]) (T, error) {
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	v, err := chromedp.Run(actx, a)
	return v, within(actx, timeout, err)
}

// within says so when err came from actx's deadline.
func within(actx context.Context, timeout time.Duration, err error) error {
	if err != nil && errors.Is(actx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("not done within %s: %w", timeout, err)
	}
	return err
}

// Response runs the steps (a navigation, a click, a form's submit), waits
// until the page they load has loaded, and returns its HTTP response, all
// within ActionTimeout; an error or the timeout fails t.
func Response(t testing.TB, ctx context.Context, steps ...chromedp.Action[chromedp.Void]) *network.Response {
	t.Helper()
	actx, cancel := context.WithTimeout(ctx, ActionTimeout)
	defer cancel()
	resp, err := chromedp.RunResponse(actx, steps...)
	if err := within(actx, ActionTimeout, err); err != nil {
		t.Fatalf("browsertest: %v", err)
	}
	return resp
}

// Screenshot saves a PNG of the whole page of ctx's tab (not only the
// window) as name.png in t's artifact directory, logs and returns its path.
// name may hold only letters, digits, '.', '-' and '_'.
func Screenshot(t testing.TB, ctx context.Context, name string) string {
	t.Helper()
	if name == "" || sanitize(name) != name {
		t.Fatalf("browsertest: screenshot name %q: use only letters, digits, '.', '-' and '_'", name)
	}
	png := Run(t, ctx, chromedp.FullScreenshot(100)) // quality 100: PNG
	dir := filepath.Join(artifactsDir(os.Getenv(ArtifactsEnv)), sanitize(t.Name()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("browsertest: screenshot: %v", err)
	}
	path := filepath.Join(dir, name+".png")
	if err := atomicfile.WriteFile(path, png, 0o644); err != nil {
		t.Fatalf("browsertest: screenshot: %v", err)
	}
	t.Logf("browsertest: screenshot %s (%d bytes)", path, len(png))
	return path
}

// artifactsDir is env, or the default directory under os.TempDir().
func artifactsDir(env string) string {
	if env != "" {
		return env
	}
	return filepath.Join(os.TempDir(), defaultArtifacts)
}

// sanitize maps a test or artifact name to a file name: every rune but
// letters, digits, '.', '-' and '_' becomes '_' (a subtest's '/' too), and
// a name of dots only gets a leading '_'.
func sanitize(name string) string {
	s := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-', r == '_':
			return r
		}
		return '_'
	}, name)
	if strings.Trim(s, ".") == "" {
		s = "_" + s
	}
	return s
}

// VirtualAuthenticator enables the WebAuthn domain on ctx's tab and adds a
// virtual authenticator to it: CTAP2, built into the device ("internal", a
// platform authenticator such as a phone's or laptop's), holding
// discoverable credentials (passkeys), with user verification that succeeds
// and user presence confirmed at once. The page's navigator.credentials
// then creates and uses credentials without a prompt. WebAuthn needs a
// secure context with a domain: http://localhost:PORT is one, a bare IP
// address is refused by the browser.
func VirtualAuthenticator(t testing.TB, ctx context.Context) webauthn.AuthenticatorID {
	t.Helper()
	return Run(t, ctx, func(ctx context.Context, tg *chromedp.Target) (webauthn.AuthenticatorID, error) {
		if _, err := cdp.Call(ctx, tg, webauthn.Enable, webauthn.EnableParams{}); err != nil {
			return "", fmt.Errorf("WebAuthn.enable: %w", err)
		}
		res, err := cdp.Call(ctx, tg, webauthn.AddVirtualAuthenticator, webauthn.AddVirtualAuthenticatorParams{
			Options: &webauthn.VirtualAuthenticatorOptions{
				Protocol:                    webauthn.AuthenticatorProtocolCtap2,
				Ctap2version:                webauthn.Ctap2versionCtap21,
				Transport:                   webauthn.AuthenticatorTransportInternal,
				HasResidentKey:              true,
				HasUserVerification:         true,
				IsUserVerified:              true,
				AutomaticPresenceSimulation: true,
			},
		})
		if err != nil {
			return "", fmt.Errorf("WebAuthn.addVirtualAuthenticator: %w", err)
		}
		return res.AuthenticatorID, nil
	})
}

// Credentials returns the credentials the virtual authenticator id of
// ctx's tab holds.
func Credentials(t testing.TB, ctx context.Context, id webauthn.AuthenticatorID) []*webauthn.Credential {
	t.Helper()
	return Run(t, ctx, func(ctx context.Context, tg *chromedp.Target) ([]*webauthn.Credential, error) {
		res, err := cdp.Call(ctx, tg, webauthn.GetCredentials, webauthn.GetCredentialsParams{AuthenticatorID: id})
		if err != nil {
			return nil, fmt.Errorf("WebAuthn.getCredentials: %w", err)
		}
		return res.Credentials, nil
	})
}
