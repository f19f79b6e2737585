// Package clientjs embeds the JavaScript client as the server serves it: one prebuilt,
// minified ES module (dist/client.js, built from src/ by `npm run build:client` and
// committed), with its gzip and brotli forms precompressed at build time, so that
// `go run ./cmd/ferry` needs no build step.
package clientjs

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
)

var (
	//go:embed dist/client.js
	js []byte
	//go:embed dist/client.js.gz
	gz []byte
	//go:embed dist/client.js.br
	br []byte
)

// Module is the client bundle: one ES module exporting the public API of src/index.js.
func Module() []byte { return js }

// Gzip and Brotli are Module compressed at build time.
func Gzip() []byte   { return gz }
func Brotli() []byte { return br }

// Hash is a content hash of Module (the first 16 hex digits of its SHA-256): it names the
// immutable URL client.<Hash>.js and is the strong ETag of every form of the module.
var Hash = func() string {
	sum := sha256.Sum256(js)
	return hex.EncodeToString(sum[:8])
}()

// File is the content-hashed file name of the module, "client.<Hash>.js".
var File = "client." + Hash + ".js"
