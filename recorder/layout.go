package recorder

import "path/filepath"

// Layout is where a device keeps its state in its data directory: the one
// place the agent and `keyframe identity` take these paths from.
//
//	<data_dir>/device.key       the device key (file backend), unless device.key_file names another file
//	<data_dir>/device-cert.pem  its certificate chain, unless device.cert_file names another file
//	<data_dir>/chain            the chain state (next sequence number, hash of the last envelope)
//	<data_dir>/spool/           records waiting for upload, unless spool.dir names another directory
//	<data_dir>/rotation.bundle  a prepared key rotation's rotate record, until the receiver accepts it
//	<data_dir>/rotation.done    the SHA-256 of the last completed rotation's rotate envelope (hex)
//	<data_dir>/joined.conf      upload.url and upload.ca_file of the receiver `keyframe join` claimed the camera at
//	<data_dir>/receiver-ca.pem  that receiver's certificate, pinned by the claim code
//	<key>.next                  the rotation's new key, until the rotation completes
//	<key>.retired               the old key, after the rotation completed
type Layout struct {
	DataDir    string
	Key        string // device key file (file backend)
	Cert       string // device certificate chain (PEM)
	Chain      string // chain state file
	Spool      string // spool directory
	Rotation   string // pending key rotation's upload bundle
	Rotated    string // the last completed rotation's envelope hash
	NextKey    string // a pending rotation's new key
	RetiredKey string // the key a completed rotation retired
	Joined     string // configuration left by keyframe join (upload.url, upload.ca_file)
	ReceiverCA string // the joined receiver's certificate (PEM), named by Joined
}

// NewLayout is the layout of the data directory dataDir. keyFile, certFile
// and spoolDir override the defaults inside it when not empty.
func NewLayout(dataDir, keyFile, certFile, spoolDir string) Layout {
	l := Layout{
		DataDir:  dataDir,
		Key:      keyFile,
		Cert:     certFile,
		Chain:    filepath.Join(dataDir, "chain"),
		Spool:    spoolDir,
		Rotation: filepath.Join(dataDir, "rotation.bundle"),
		Rotated:  filepath.Join(dataDir, "rotation.done"),

		Joined:     filepath.Join(dataDir, "joined.conf"),
		ReceiverCA: filepath.Join(dataDir, "receiver-ca.pem"),
	}
	if l.Key == "" {
		l.Key = filepath.Join(dataDir, "device.key")
	}
	if l.Cert == "" {
		l.Cert = filepath.Join(dataDir, "device-cert.pem")
	}
	if l.Spool == "" {
		l.Spool = filepath.Join(dataDir, "spool")
	}
	l.NextKey = l.Key + ".next"
	l.RetiredKey = l.Key + ".retired"
	return l
}
