module github.com/keyframe-cam/keyframe

go 1.26.8

require (
	github.com/blackjack/webcam v0.6.1 // indirect
	github.com/fxamacker/cbor/v2 v2.9.6 // indirect
	github.com/veraison/go-cose v1.3.0 // indirect
	github.com/x448/float16 v0.8.4 // indirect
	golang.org/x/image v0.47.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
)
