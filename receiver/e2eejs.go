package receiver

import (
	"bytes"
	_ "embed" // e2ee.js
	"net/http"
	"time"
)

// e2eeJS is the owner's pages' end-to-end encryption library
// (docs/e2ee.md): HPKE, sealed media, record checks, the owner's keys in
// IndexedDB and the account page's piece, as window.KFE2EE.
//
//go:embed e2ee.js
var e2eeJS []byte

// handleE2EEJS serves e2ee.js, like passkey.js: a page that loads it sends
// passkeyPageCSP (script-src 'self', connect-src 'self').
func (s *Server) handleE2EEJS(w http.ResponseWriter, r *http.Request, _ *user) {
	serveE2EEJS(w, r)
}

func serveE2EEJS(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/javascript; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-cache")
	http.ServeContent(w, r, "e2ee.js", time.Time{}, bytes.NewReader(e2eeJS))
}
