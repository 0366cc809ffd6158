package browsertest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"html/template"
	"image/png"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// A page with a form posting to its own origin, an HttpOnly cookie and a
// script-visible one, and a script writing what document.cookie shows.
var formPage = template.Must(template.New("form").Parse(`<!doctype html>
<title>form</title>
<form method="post" action="/hello"><input id="name" name="name"><button id="send">send</button></form>
<p id="cookies"></p>
<script>document.getElementById("cookies").textContent = "script sees: " + document.cookie;</script>
`))

// The answer to the form's post.
var helloPage = template.Must(template.New("hello").Parse(`<!doctype html>
<title>hello</title>
<p id="result">hello, {{.Name}}; session cookie: {{.Cookie}}</p>
`))

// sessionValue is the HttpOnly cookie's value: the script must not see it.
const sessionValue = "s3cret-session"

// formServer serves formPage at / (setting the cookies) and answers its post
// at /hello, behind net/http's cross-origin protection.
func formServer(t *testing.T) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: "session", Value: sessionValue, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
		http.SetCookie(w, &http.Cookie{Name: "visible", Value: "1", Path: "/", SameSite: http.SameSiteStrictMode})
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = formPage.Execute(w, nil)
	})
	mux.HandleFunc("POST /hello", func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, 1<<10)
		if err := r.ParseForm(); err != nil {
			http.Error(w, "bad form", http.StatusBadRequest)
			return
		}
		cookie := "missing"
		if c, err := r.Cookie("session"); err == nil && c.Value == sessionValue {
			cookie = "sent"
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = helloPage.Execute(w, struct{ Name, Cookie string }{r.PostForm.Get("name"), cookie})
	})
	srv := httptest.NewServer(http.NewCrossOriginProtection().Handler(mux))
	t.Cleanup(srv.Close)
	return srv
}

// TestFormCookieScreenshot fills and submits a same-origin form (which the
// cross-origin protection lets through), reads the answer, checks that the
// HttpOnly cookie reaches the server but not the page's script, and saves a
// screenshot that decodes as a PNG.
func TestFormCookieScreenshot(t *testing.T) {
	srv := formServer(t)
	ctx := New(t)

	Do(t, ctx, chromedp.Navigate(srv.URL), chromedp.WaitVisible(chromedp.ID("cookies")))
	seen := Run(t, ctx, chromedp.Text(chromedp.ID("cookies")))
	if !strings.Contains(seen, "visible=1") {
		t.Errorf("the script should see the cookie visible=1: %q", seen)
	}
	if strings.Contains(seen, "session") || strings.Contains(seen, sessionValue) {
		t.Errorf("the script sees the HttpOnly cookie: %q", seen)
	}
	if js := Run(t, ctx, chromedp.Evaluate[string]("document.cookie")); strings.Contains(js, sessionValue) {
		t.Errorf("document.cookie holds the HttpOnly cookie: %q", js)
	}
	Screenshot(t, ctx, "form")

	Do(t, ctx,
		chromedp.SendKeys(chromedp.ID("name"), "Ada <b>"),
		chromedp.Click(chromedp.ID("send")),
		chromedp.WaitVisible(chromedp.ID("result")),
	)
	if got, want := Run(t, ctx, chromedp.Text(chromedp.ID("result"))), "hello, Ada <b>; session cookie: sent"; got != want {
		t.Errorf("result %q, want %q", got, want)
	}

	path := Screenshot(t, ctx, "hello")
	if dir := artifactsDir(os.Getenv(ArtifactsEnv)); !strings.HasPrefix(path, filepath.Join(dir, sanitize(t.Name()))+string(filepath.Separator)) {
		t.Errorf("screenshot %s not under %s", path, dir)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("screenshot %s: %v", path, err)
	}
	if r := img.Bounds(); r.Dx() < windowWidth/2 || r.Dy() < 100 {
		t.Errorf("screenshot %s is %v", path, r)
	}
}

// TestCrossOriginPost posts a form from a page on origin A to origin B: the
// browser marks the request (Sec-Fetch-Site, Origin), and B's handler behind
// http.CrossOriginProtection answers 403 without running, while an
// unprotected handler sees the headers. B is another port on the same
// address (same-site) and another host name (cross-site).
func TestCrossOriginPost(t *testing.T) {
	type seen struct{ site, origin string }
	var (
		mu        sync.Mutex
		got       = map[string]seen{} // by path
		protected bool                // the protected handler ran
	)
	record := func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got[r.URL.Path] = seen{r.Header.Get("Sec-Fetch-Site"), r.Header.Get("Origin")}
		if r.URL.Path == "/protected" {
			protected = true
		}
		mu.Unlock()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("received"))
	}
	b := http.NewServeMux()
	b.Handle("POST /protected", http.NewCrossOriginProtection().Handler(http.HandlerFunc(record)))
	b.HandleFunc("POST /open", record)
	srvB := httptest.NewServer(b)
	t.Cleanup(srvB.Close)
	_, portB, _ := net.SplitHostPort(srvB.Listener.Addr().String())

	page := template.Must(template.New("a").Parse(`<!doctype html>
<form id="protected" method="post" action="{{.}}/protected"><input name="x" value="1"><button>go</button></form>
<form id="open" method="post" action="{{.}}/open"><input name="x" value="1"><button>go</button></form>`))
	var targetB string // B's origin as the page on A names it; under mu
	srvA := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		origin := targetB
		mu.Unlock()
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = page.Execute(w, template.URL(origin))
	}))
	t.Cleanup(srvA.Close)

	ctx := New(t)
	for _, tc := range []struct {
		name, hostB, site string
	}{
		{"same-site", "127.0.0.1", "same-site"}, // another port: another origin, same site
		{"cross-site", "localhost", "cross-site"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			targetB = "http://" + net.JoinHostPort(tc.hostB, portB)
			clear(got)
			mu.Unlock()
			for _, form := range []string{"protected", "open"} {
				Do(t, ctx, chromedp.Navigate(srvA.URL), chromedp.WaitReady(chromedp.ID(form)))
				resp := Response(t, ctx, chromedp.Submit(chromedp.ID(form)))
				body := Run(t, ctx, chromedp.Text(chromedp.CSS("body")))
				switch form {
				case "protected":
					if resp.Status != http.StatusForbidden || strings.Contains(body, "received") {
						t.Errorf("post to B's protected handler: %d %q, want 403", resp.Status, body)
					}
					Screenshot(t, ctx, "refused")
				case "open":
					if resp.Status != http.StatusOK || body != "received" {
						t.Errorf("post to B's open handler: %d %q, want 200 received", resp.Status, body)
					}
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if protected {
				t.Error("the protected handler ran for a cross-origin post")
			}
			if s := got["/open"]; s.site != tc.site || s.origin != srvA.URL {
				t.Errorf("open handler saw Sec-Fetch-Site %q Origin %q, want %q %q", s.site, s.origin, tc.site, srvA.URL)
			}
		})
	}
}

// TestVirtualAuthenticator creates a passkey with the virtual authenticator
// on a localhost page, finds it in the authenticator, and signs in with it
// (a discoverable credential: no ID given to get); on the bare IP address
// the browser refuses to create one.
func TestVirtualAuthenticator(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte("<!doctype html><title>passkey</title><p>passkey</p>"))
	}))
	t.Cleanup(srv.Close)
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	local := "http://" + net.JoinHostPort("localhost", u.Port())

	ctx := New(t)
	Do(t, ctx, chromedp.Navigate(local))
	id := VirtualAuthenticator(t, ctx)
	if ok := Run(t, ctx, chromedp.Evaluate[bool](`typeof PublicKeyCredential === "function" && window.isSecureContext`)); !ok {
		t.Fatal("no PublicKeyCredential, or not a secure context, on " + local)
	}
	created := Run(t, ctx, chromedp.Evaluate[string](createJS, chromedp.EvalAwaitPromise))
	raw, err := base64.RawURLEncoding.DecodeString(created)
	if err != nil || len(raw) == 0 {
		t.Fatalf("credential id %q: %v", created, err)
	}
	creds := Credentials(t, ctx, id)
	if len(creds) != 1 || !bytes.Equal(creds[0].CredentialID, raw) || creds[0].RpID != "localhost" || !creds[0].IsResidentCredential {
		t.Fatalf("authenticator holds %+v, want one discoverable credential %x for localhost", creds, raw)
	}
	if used := Run(t, ctx, chromedp.Evaluate[string](getJS, chromedp.EvalAwaitPromise)); used != created {
		t.Errorf("signed in with credential %q, want %q", used, created)
	}

	Do(t, ctx, chromedp.Navigate(srv.URL)) // http://127.0.0.1:port
	if msg := Run(t, ctx, chromedp.Evaluate[string](createOrErrorJS, chromedp.EvalAwaitPromise)); !strings.HasPrefix(msg, "SecurityError") {
		t.Errorf("navigator.credentials.create on %s: %q, want a SecurityError", srv.URL, msg)
	}
}

// createJS creates a discoverable credential with user verification for
// the page's host and returns its ID (base64url).
const createJS = `navigator.credentials.create({publicKey: {
	challenge: crypto.getRandomValues(new Uint8Array(32)),
	rp: {name: "keyframe test"},
	user: {id: new Uint8Array([1, 2, 3, 4]), name: "ada", displayName: "Ada"},
	pubKeyCredParams: [{type: "public-key", alg: -7}],
	authenticatorSelection: {residentKey: "required", userVerification: "required"},
}}).then(c => c.id)`

// getJS asks for an assertion with no allowed credentials listed (the
// authenticator picks its discoverable one) and returns the credential ID.
const getJS = `navigator.credentials.get({publicKey: {
	challenge: crypto.getRandomValues(new Uint8Array(32)),
	userVerification: "required",
}}).then(c => c.id)`

// createOrErrorJS is createJS returning "name: message" of an error.
const createOrErrorJS = createJS + `.catch(e => e.name + ": " + e.message)`

// TestCleanupLeavesNoProcess runs a browser in a subtest and checks that
// once the subtest is over no process of that browser is left. It logs how
// many processes the browser ran and their memory, with a page loaded.
func TestCleanupLeavesNoProcess(t *testing.T) {
	srv := formServer(t)
	var dir string
	t.Run("browser", func(t *testing.T) {
		b := start(t)
		dir = b.dir
		Do(t, b.ctx, chromedp.Navigate(srv.URL), chromedp.WaitVisible(chromedp.ID("cookies")))
		pids, err := processesUsing(dir)
		if err != nil {
			t.Skip(err)
		}
		if len(pids) == 0 {
			t.Fatalf("no process found with --user-data-dir=%s", dir)
		}
		if rss, pss, err := memory(pids); err == nil {
			t.Logf("chromium: %d processes, RSS sum %d MiB, PSS sum %d MiB", len(pids), rss>>20, pss>>20)
		}
	})
	if dir == "" {
		t.Skip("no browser was started")
	}
	pids, err := processesUsing(dir)
	if err != nil {
		t.Skip(err)
	}
	if len(pids) != 0 {
		t.Errorf("processes %v of the browser outlived its test", pids)
	}
}

// TestHungPageFails navigates to a page whose server never answers: the
// action returns an error when its time is up instead of waiting forever,
// and the browser still works afterwards.
func TestHungPageFails(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hang" {
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		_, _ = w.Write([]byte("<p id=ok>ok</p>"))
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // runs before srv.Close, which waits for handlers
	ctx := New(t)

	const timeout = 2 * time.Second
	_, err := runWithin(ctx, timeout, chromedp.Navigate(srv.URL+"/hang"))
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "not done within") {
		t.Fatalf("navigation to a page that never answers: %v, want a timeout", err)
	}
	Do(t, ctx, chromedp.Navigate(srv.URL+"/"), chromedp.WaitVisible(chromedp.ID("ok")))
}

// TestTrustKey: a page over TLS with a self-signed certificate loads in a
// browser told to trust its key, and not in one that was not (nor in the
// first for a server with another key).
func TestTrustKey(t *testing.T) {
	page := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("<!doctype html><p id=ok>over TLS</p>"))
	})
	trusted := httptest.NewTLSServer(page)
	t.Cleanup(trusted.Close)
	other := httptest.NewUnstartedServer(page)
	cert, err := tls.X509KeyPair(otherCertPEM(t))
	if err != nil {
		t.Fatal(err)
	}
	other.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	other.StartTLS()
	t.Cleanup(other.Close)

	loads := func(ctx context.Context, url string) error {
		_, err := RunErr(ctx, chromedp.Steps(chromedp.Navigate(url), chromedp.WaitVisible(chromedp.ID("ok"))))
		return err
	}
	ctx := New(t, TrustKey(trusted.Certificate().RawSubjectPublicKeyInfo))
	if err := loads(ctx, trusted.URL); err != nil {
		t.Errorf("the trusted server's page: %v", err)
	}
	if err := loads(ctx, other.URL); err == nil || !strings.Contains(err.Error(), "ERR_CERT") {
		t.Errorf("a server with another key: %v, want a certificate error", err)
	}
	if err := loads(New(t), trusted.URL); err == nil || !strings.Contains(err.Error(), "ERR_CERT") {
		t.Errorf("without TrustKey: %v, want a certificate error", err)
	}
}

// otherCertPEM returns a self-signed certificate for 127.0.0.1 and its key,
// PEM.
func otherCertPEM(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "other"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}
