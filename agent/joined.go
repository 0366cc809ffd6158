package agent

import (
	"bufio"
	"bytes"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/keyframe-cam/keyframe/internal/atomicfile"
)

// The receiver a camera was claimed at (`keyframe join`, docs/claim.md) is
// kept in its data directory, in Layout(c).Joined: a configuration file of
// two keys, upload.url and upload.ca_file (Layout(c).ReceiverCA, the
// certificate the claim code pinned), and e2ee.owner when the claim code
// committed to the owner's identity (docs/e2ee.md §5). LoadConfig reads it as defaults: the
// configuration file and KEYFRAME_* variables still win, so an operator's
// explicit setting is never overridden by a join.

// joinedKey reports whether a joined file may set key.
func joinedKey(key string) bool {
	return key == "upload.url" || key == "upload.ca_file" || key == "e2ee.owner"
}

// maxJoined bounds the joined file.
const maxJoined = 64 << 10

// WriteJoined records the receiver the camera joined: its certificate (DER)
// as PEM in Layout(c).ReceiverCA, then Layout(c).Joined naming it and
// uploadURL. Both are written atomically; the certificate first, so the
// joined file never names a missing one. It returns the joined file's path.
func WriteJoined(c *Config, uploadURL string, certDER []byte) (string, error) {
	return WriteJoinedOwner(c, uploadURL, certDER, "")
}

// WriteJoinedOwner is WriteJoined that also pins the owner's end-to-end
// encryption identity: e2ee.owner = owner (the owner fingerprint, 64 hex),
// unless owner is "".
func WriteJoinedOwner(c *Config, uploadURL string, certDER []byte, owner string) (string, error) {
	l := Layout(c)
	if err := os.MkdirAll(l.DataDir, 0o700); err != nil {
		return "", fmt.Errorf("agent: data directory: %w", err)
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certDER})
	if err := atomicfile.WriteFile(l.ReceiverCA, caPEM, 0o644); err != nil {
		return "", fmt.Errorf("agent: write the receiver certificate: %w", err)
	}
	var b bytes.Buffer
	fmt.Fprintln(&b, "# Written by keyframe join: the receiver this camera was claimed at.")
	fmt.Fprintln(&b, "# keyframe run uses these unless its configuration file or KEYFRAME_* variables set them.")
	fmt.Fprintf(&b, "upload.url = %s\n", strconv.Quote(uploadURL))
	fmt.Fprintf(&b, "upload.ca_file = %s\n", strconv.Quote(l.ReceiverCA))
	if owner != "" {
		fmt.Fprintf(&b, "e2ee.owner = %s\n", strconv.Quote(owner))
	}
	if err := atomicfile.WriteFile(l.Joined, b.Bytes(), 0o644); err != nil {
		return "", fmt.Errorf("agent: write %s: %w", l.Joined, err)
	}
	return l.Joined, nil
}

// applyJoined sets the keys of the joined file at path on c. It may set
// only the keys joinedKey allows.
func applyJoined(path string, c *Config) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("agent: config: %w", err)
	}
	if len(data) > maxJoined {
		return fmt.Errorf("agent: config %s: %d bytes, at most %d", path, len(data), maxJoined)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), maxJoined)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		key, _, _ := strings.Cut(text, "=")
		if key = strings.TrimSpace(key); !joinedKey(key) {
			return fmt.Errorf("agent: config %s:%d: %q may not be set here (only upload.url, upload.ca_file and e2ee.owner, as keyframe join writes them)", path, line, key)
		}
	}
	return ParseConfig(bytes.NewReader(data), path, c)
}

// joinedPath is the joined file of c's data directory, or "" if there is
// none.
func joinedPath(c *Config) (string, error) {
	if c.DataDir == "" {
		return "", nil
	}
	p := Layout(c).Joined
	_, err := os.Stat(p)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return "", nil
	case err != nil:
		return "", fmt.Errorf("agent: config: %w", err)
	}
	return p, nil
}
