module github.com/keyframe-cam/keyframe

go 1.26.8

require (
	github.com/fxamacker/cbor/v2 v2.9.6
	github.com/google/go-tpm v0.9.8
	github.com/veraison/go-cose v1.3.0
	golang.org/x/image v0.47.0
	golang.org/x/sys v0.49.0
)

require github.com/x448/float16 v0.8.4 // indirect
