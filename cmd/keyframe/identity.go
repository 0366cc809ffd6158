package main

import (
	"crypto/rand"
	"flag"
	"fmt"
	"io"

	"github.com/keyframe-cam/keyframe/agent"
	"github.com/keyframe-cam/keyframe/board"
	"github.com/keyframe-cam/keyframe/internal/atomicfile"
)

func cmdIdentity(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("identity", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "configuration file (device.data_dir, device.key_file)")
	pubOut := fs.String("pubout", "", "also write the public key (PEM) to this file, e.g. for enrolling the device at a receiver")
	idOnly := fs.Bool("id", false, "print only the device ID")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	c, ok := loadConfig(*cfgPath, stderr)
	if !ok {
		return 2
	}
	key, id, created, err := agent.Identity(&c, rand.Reader)
	if err != nil {
		fmt.Fprintf(stderr, "keyframe: %v\n", err)
		return 1
	}
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
	fmt.Fprintf(stdout, "device:  %s\nbackend: %s\nkey:     %s\n%s", id, key.Backend(), agent.KeyPath(&c), pem)
	return 0
}
