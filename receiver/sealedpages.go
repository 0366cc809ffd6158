package receiver

import (
	"bytes"
	_ "embed" // sealed.js
	"net/http"
	"time"
)

// sealedJS opens the end-to-end encrypted pictures of the owner's pages
// (sealed.js, docs/e2ee.md) with the e2ee library (e2ee.js).
//
//go:embed sealed.js
var sealedJS []byte

func (s *Server) handleSealedJS(w http.ResponseWriter, r *http.Request, _ *user) {
	h := w.Header()
	h.Set("Content-Type", "text/javascript; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-cache")
	http.ServeContent(w, r, "sealed.js", time.Time{}, bytes.NewReader(sealedJS))
}
