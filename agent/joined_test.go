package agent

import (
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestJoinedDefaults: what keyframe join wrote is used when neither the
// configuration file nor the environment sets it, and loses to both.
func TestJoinedDefaults(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "keyframe.conf")
	if err := os.WriteFile(cfgFile, []byte("device.data_dir = "+dir+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadConfig(cfgFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.UploadURL != DefaultConfig().UploadURL || c.UploadCAFile != "" {
		t.Fatalf("before join: %q %q", c.UploadURL, c.UploadCAFile)
	}
	path, err := WriteJoined(&c, "https://cams.example:8443/", []byte("DER"))
	if err != nil {
		t.Fatal(err)
	}
	if path != Layout(&c).Joined {
		t.Errorf("joined file %s, want %s", path, Layout(&c).Joined)
	}
	ca, err := os.ReadFile(Layout(&c).ReceiverCA)
	if blk, _ := pem.Decode(ca); err != nil || blk == nil || blk.Type != "CERTIFICATE" || string(blk.Bytes) != "DER" {
		t.Fatalf("receiver certificate file %q (%v)", ca, err)
	}

	c, err = LoadConfig(cfgFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.UploadURL != "https://cams.example:8443/" || c.UploadCAFile != Layout(&c).ReceiverCA {
		t.Errorf("after join: upload.url %q upload.ca_file %q", c.UploadURL, c.UploadCAFile)
	}

	// The file wins, then the environment.
	if err := os.WriteFile(cfgFile, []byte("device.data_dir = "+dir+"\nupload.url = https://other.example/\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err = LoadConfig(cfgFile, []string{"KEYFRAME_UPLOAD_CA_FILE=/etc/ca.pem"})
	if err != nil {
		t.Fatal(err)
	}
	if c.UploadURL != "https://other.example/" || c.UploadCAFile != "/etc/ca.pem" {
		t.Errorf("file and environment over join: %q %q", c.UploadURL, c.UploadCAFile)
	}
}

// TestJoinedRestricted: the joined file may set only upload.url and
// upload.ca_file: a file planted in the data directory cannot change the
// key backend or anything else.
func TestJoinedRestricted(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "joined.conf"), []byte("upload.url = https://a.example/\ndevice.key_backend = tpm\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := LoadConfig("", []string{"KEYFRAME_DEVICE_DATA_DIR=" + dir})
	if err == nil || !strings.Contains(err.Error(), "device.key_backend") || !strings.Contains(err.Error(), "may not be set here") {
		t.Fatalf("joined file setting device.key_backend: %v", err)
	}
}
