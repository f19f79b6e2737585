// Package clientjs embeds the JavaScript client as the server serves it: prebuilt,
// minified ES modules (dist/, built from src/ by `npm run build:client` and committed),
// with their gzip and brotli forms precompressed at build time, so that `go run
// ./cmd/ferry` needs no build step.
//
//   - Client (dist/client.js) exports the public API of src/index.js.
//   - Share (dist/share.js) exports the same API with tabs that share one connection
//     (`share: true`); it imports the base module as "./client.js", so it is served
//     beside it.
//   - Presence (dist/presence.js) exports presence and presenceFeed, for subscriptions of
//     either; it imports the base module as "./client.js" too.
//   - Codes (dist/codes.js) exports the close-code table with each code's names
//     (CloseCodes), which the base module leaves out; Memory (dist/memory.js) exports
//     rememberTransport, the opt-in transport memory. Neither imports anything.
package clientjs

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
)

// A Bundle is one module in the forms the server sends.
type Bundle struct {
	// Name is the module's stable file name ("client.js").
	Name string
	// Module is the minified module; Gzip and Brotli are it compressed at build time.
	Module, Gzip, Brotli []byte
	// Hash is a content hash of Module (the first 16 hex digits of its SHA-256): the
	// strong ETag of every form of the module.
	Hash string
}

// dist holds the built modules, each with its gzip and brotli forms beside it (build.mjs).
//
//go:embed dist/*.js dist/*.js.gz dist/*.js.br
var dist embed.FS

// newBundle reads the module dist/name and its compressed forms. They are embedded, so a
// missing one is a broken build: it panics at start-up.
func newBundle(name string) Bundle {
	read := func(file string) []byte {
		b, err := dist.ReadFile("dist/" + file)
		if err != nil {
			panic("clientjs: " + err.Error())
		}
		return b
	}
	js := read(name)
	sum := sha256.Sum256(js)
	return Bundle{Name: name, Module: js, Gzip: read(name + ".gz"), Brotli: read(name + ".br"), Hash: hex.EncodeToString(sum[:8])}
}

// Client is the base client; Share the client with tabs that share one connection; Presence
// who is present on a channel; Codes the close-code table; Memory the transport memory.
var (
	Client   = newBundle("client.js")
	Share    = newBundle("share.js")
	Presence = newBundle("presence.js")
	Codes    = newBundle("codes.js")
	Memory   = newBundle("memory.js")
)

// File is the base module's content-hashed file name, "client.<Hash>.js", which the server
// serves as immutable. (The share module is served at its stable name only: it imports
// "./client.js", which is revalidated, so a hashed name would not make it immutable.)
var File = "client." + Client.Hash + ".js"
