module github.com/toworker/toworker

go 1.26.8

require (
	github.com/fxamacker/cbor/v2 v2.10.0
	github.com/kevinburke/ssh_config v1.6.0
	go.uber.org/goleak v1.3.0
	golang.org/x/crypto v0.59.0
	golang.org/x/sys v0.50.0
	golang.org/x/term v0.48.0
)

require github.com/x448/float16 v0.8.4 // indirect
