package main

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/keyframe-cam/keyframe/agent"
	"github.com/keyframe-cam/keyframe/board"
	"github.com/keyframe-cam/keyframe/internal/atomicfile"
	"github.com/keyframe-cam/keyframe/internal/cli"
	"github.com/keyframe-cam/keyframe/provenance"
	"github.com/keyframe-cam/keyframe/recorder"
	"github.com/keyframe-cam/keyframe/recorder/rotation"
)

const identityUsage = `usage: keyframe identity [-config FILE] [-pubout FILE] [-id]
       keyframe identity csr [-config FILE] [-out FILE]
       keyframe identity cert install [-config FILE] [-cert FILE] CERT.pem
       keyframe identity rotate [-config FILE]
`

func cmdIdentity(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "csr":
			return identityCSR(args[1:], stdout, stderr)
		case "cert":
			if len(args) > 1 && args[1] == "install" {
				return identityCertInstall(args[2:], stdout, stderr)
			}
			fmt.Fprintf(stderr, "keyframe identity cert: want \"install\"\n%s", identityUsage)
			return 2
		case "rotate":
			return identityRotate(args[1:], stdout, stderr)
		case "help":
			fmt.Fprint(stdout, identityUsage)
			return 0
		}
	}
	fs := flag.NewFlagSet("keyframe identity", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := configFlag(fs, systemConfig, "configuration file (device.data_dir, device.key_file)")
	pubOut := fs.String("pubout", "", "also write the public key (PEM) to this file, e.g. for enrolling the device at a receiver")
	idOnly := fs.Bool("id", false, "print only the device ID")
	if code, ok := cli.Parse(fs, args, identityUsage, stdout, stderr); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "keyframe identity: unexpected argument %q\n%s", fs.Arg(0), identityUsage)
		return 2
	}
	c, ok := cli.LoadConfig("keyframe", *cfgPath, stderr)
	if !ok {
		return 2
	}
	key, id, created, err := agent.Identity(&c, rand.Reader)
	if err != nil {
		fmt.Fprintf(stderr, "keyframe: %v\n", err)
		return 1
	}
	defer closeKey(key)
	pem, err := board.PublicKeyPEM(key.Public())
	if err != nil {
		fmt.Fprintf(stderr, "keyframe: %v\n", err)
		return 1
	}
	if *pubOut != "" {
		if err := atomicfile.WriteFile(*pubOut, pem, 0o644); err != nil {
			fmt.Fprintf(stderr, "keyframe: %v\n", err)
			return 1
		}
	}
	if *idOnly {
		fmt.Fprintln(stdout, id)
		return 0
	}
	if created {
		fmt.Fprintln(stdout, "created a new device key")
	}
	fmt.Fprintf(stdout, "device:  %s\nbackend: %s\nkey:     %s\n%s", id, key.Backend(), agent.KeyLocation(&c), pem)
	return 0
}

// closeKey closes what a key holds open (a TPM connection), if anything.
func closeKey(k board.Key) {
	if c, ok := k.(io.Closer); ok {
		c.Close()
	}
}

// identityCSR writes a certificate signing request for the device key.
func identityCSR(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("keyframe identity csr", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := configFlag(fs, systemConfig, "configuration file (device.data_dir, device.key_file)")
	out := fs.String("out", "", "write the request (PEM) to this file instead of standard output")
	if code, ok := cli.Parse(fs, args, identityUsage, stdout, stderr); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "keyframe identity csr: unexpected argument %q\n%s", fs.Arg(0), identityUsage)
		return 2
	}
	c, ok := cli.LoadConfig("keyframe", *cfgPath, stderr)
	if !ok {
		return 2
	}
	key, id, _, err := agent.Identity(&c, rand.Reader)
	if err != nil {
		fmt.Fprintf(stderr, "keyframe identity csr: %v\n", err)
		return 1
	}
	defer closeKey(key)
	der, err := provenance.CreateCSR(rand.Reader, key)
	if err != nil {
		fmt.Fprintf(stderr, "keyframe identity csr: %v\n", err)
		return 1
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	if *out == "" {
		stdout.Write(data)
		return 0
	}
	if err := atomicfile.WriteFile(*out, data, 0o644); err != nil {
		fmt.Fprintf(stderr, "keyframe identity csr: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "wrote a certificate request for device %s (CN %s, URI %s) to %s\n", id, id, provenance.DeviceURI(id), *out)
	return 0
}

// identityCertInstall checks a device certificate chain against the device
// key and installs it as the device certificate file.
func identityCertInstall(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("keyframe identity cert install", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := configFlag(fs, systemConfig, "configuration file (device.data_dir, device.key_file)")
	dest := fs.String("cert", "", "install to this file (default: device.cert_file, or <data_dir>/device-cert.pem)")
	if code, ok := cli.Parse(fs, args, identityUsage, stdout, stderr); !ok {
		return code
	}
	if fs.NArg() != 1 {
		fmt.Fprintf(stderr, "keyframe identity cert install: want one certificate file (PEM: device certificate first, then intermediates)\n%s", identityUsage)
		return 2
	}
	c, ok := cli.LoadConfig("keyframe", *cfgPath, stderr)
	if !ok {
		return 2
	}
	path := *dest
	if path == "" {
		path = agent.CertPath(&c)
	}
	key, id, _, err := agent.Identity(&c, rand.Reader)
	if err != nil {
		fmt.Fprintf(stderr, "keyframe identity cert install: %v\n", err)
		return 1
	}
	defer closeKey(key)
	leaf, err := installCert(fs.Arg(0), path, key, time.Now())
	if err != nil {
		fmt.Fprintf(stderr, "keyframe identity cert install: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "installed the certificate of device %s (issuer %s, valid until %s) as %s\n",
		id, leaf.Issuer, leaf.NotAfter.UTC().Format(time.RFC3339), path)
	return 0
}

// installCert reads the PEM chain in src, checks it for key at now
// (provenance.CheckCertChain) and writes it atomically to dest.
func installCert(src, dest string, key board.Key, now time.Time) (*x509.Certificate, error) {
	data, err := os.ReadFile(src)
	if err != nil {
		return nil, err
	}
	chain, err := provenance.ParseCertChain(data)
	if err != nil {
		return nil, err
	}
	certs, err := provenance.CheckCertChain(chain, key.Public(), now)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(dest), 0o700); err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(dest, provenance.EncodeCertChain(chain), 0o644); err != nil {
		return nil, err
	}
	return certs[0], nil
}

// identityRotate prepares a key rotation: a new key next to the old one and
// the rotate record, signed by both, for the agent to upload.
func identityRotate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("keyframe identity rotate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := configFlag(fs, systemConfig, "configuration file (device.data_dir, device.key_file)")
	if code, ok := cli.Parse(fs, args, identityUsage, stdout, stderr); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "keyframe identity rotate: unexpected argument %q\n%s", fs.Arg(0), identityUsage)
		return 2
	}
	c, ok := cli.LoadConfig("keyframe", *cfgPath, stderr)
	if !ok {
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "keyframe identity rotate: %v\n", err)
		return 1
	}
	if c.KeyBackend == board.BackendTPM {
		return fail(errors.New("the tpm key backend cannot rotate yet (the new key needs a persistent handle of its own); only file keys rotate"))
	}
	layout := agent.Layout(&c)
	if _, err := os.Stat(layout.Key); err != nil {
		return fail(fmt.Errorf("no device key to rotate: %w", err))
	}
	if p, err := rotation.Load(layout); err != nil {
		return fail(err)
	} else if p != nil {
		return fail(fmt.Errorf("a rotation from %s to %s is already pending (%s): the agent uploads it and completes it on its next start", p.OldDevice, p.NewDevice, p.BundlePath))
	}
	old, oldID, _, err := agent.Identity(&c, rand.Reader)
	if err != nil {
		return fail(err)
	}
	defer closeKey(old)
	// The new key is on disk before anything refers to it; the old key is not
	// touched until the agent completes the rotation. After a crash here the
	// same new key is picked up again.
	next, _, err := board.LoadOrCreateFileKey(layout.NextKey, rand.Reader)
	if err != nil {
		return fail(err)
	}
	b, err := board.NewFS("/")
	if err != nil {
		return fail(err)
	}
	// The same stamp as the agent's records: boot ID (a per-process one where
	// the kernel has none), clock quality, time since boot.
	stamper, err := recorder.NewStamper(recorder.StampConfig{Board: b, Rand: rand.Reader})
	if err != nil {
		return fail(err)
	}
	now := time.Now()
	st := stamper.Now()
	var chain [][]byte
	switch ch, err := provenance.LoadCertChain(layout.Cert); {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		fmt.Fprintf(stderr, "keyframe identity rotate: warning: %v; the rotate record carries no certificate\n", err)
	default:
		if _, err := provenance.CheckCertChain(ch, old.Public(), now); err != nil {
			fmt.Fprintf(stderr, "keyframe identity rotate: warning: %v; the rotate record carries no certificate\n", err)
		} else {
			chain = ch
		}
	}
	req := rotation.Request{
		Layout:    layout,
		Old:       old,
		New:       next,
		KeyStore:  old.Backend(),
		Boot:      stamper.Boot(),
		Time:      st.Time(now),
		CertChain: chain,
		Chain:     recorder.ChainFile(layout.Chain),
		Rand:      rand.Reader,
	}
	p, err := rotation.Prepare(req)
	if err != nil {
		return fail(err)
	}
	fmt.Fprintf(stdout, "old device: %s\nnew device: %s\nnew key:    %s\nbundle:     %s (rotate record seq %d, event %s)\n",
		oldID, p.NewDevice, p.NewKeyPath, p.BundlePath, p.Seq, p.Event)
	fmt.Fprintln(stdout, "The agent uploads the rotate record on its next start, signs with the new key from then on, and keeps the old key as",
		layout.RetiredKey, "once the receiver has accepted it.")
	return 0
}
