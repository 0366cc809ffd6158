package mqttlink

import (
	"fmt"
	"io"
	"os"
	"strings"
)

// maxPasswordFile bounds a password file.
const maxPasswordFile = 4 << 10

// ReadPasswordFile reads a broker password from the file at path: its first
// line, without the line end. The file must be a regular file that other
// users cannot read (mode o-rwx: 0600, or 0640 with a group). Errors name
// the file, never its content.
func ReadPasswordFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s: not a regular file", path)
	}
	if fi.Mode().Perm()&0o007 != 0 {
		return "", fmt.Errorf("%s: mode %04o lets every user read the password: chmod o-rwx it (0600, or 0640 with the service's group)", path, fi.Mode().Perm())
	}
	b, err := io.ReadAll(io.LimitReader(f, maxPasswordFile+1))
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	if len(b) > maxPasswordFile {
		return "", fmt.Errorf("%s: over %d bytes, not a password file", path, maxPasswordFile)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	line = strings.TrimSuffix(line, "\r")
	if line == "" {
		return "", fmt.Errorf("%s: the first line is empty (want the password)", path)
	}
	return line, nil
}
