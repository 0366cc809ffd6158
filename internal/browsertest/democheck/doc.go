// Package democheck holds one browser test, TestDemoSignIn, which
// scripts/demo-check.sh runs against `make run`: it opens the demo's
// one-time sign-in link (the `keyframe demo: sign in:` line) in headless
// chromium and waits, at most 30 s, for the demo owner's page to show a
// verified event whose thumbnail the browser decoded. Without
// $DEMO_SIGNIN_URL it is skipped, so `go test ./...` passes it by.
package democheck
