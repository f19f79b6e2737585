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
	_ "embed"
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

func newBundle(name string, js, gz, br []byte) Bundle {
	sum := sha256.Sum256(js)
	return Bundle{Name: name, Module: js, Gzip: gz, Brotli: br, Hash: hex.EncodeToString(sum[:8])}
}

var (
	//go:embed dist/client.js
	clientJS []byte
	//go:embed dist/client.js.gz
	clientGz []byte
	//go:embed dist/client.js.br
	clientBr []byte
	//go:embed dist/share.js
	shareJS []byte
	//go:embed dist/share.js.gz
	shareGz []byte
	//go:embed dist/share.js.br
	shareBr []byte
	//go:embed dist/presence.js
	presenceJS []byte
	//go:embed dist/presence.js.gz
	presenceGz []byte
	//go:embed dist/presence.js.br
	presenceBr []byte
	//go:embed dist/codes.js
	codesJS []byte
	//go:embed dist/codes.js.gz
	codesGz []byte
	//go:embed dist/codes.js.br
	codesBr []byte
	//go:embed dist/memory.js
	memoryJS []byte
	//go:embed dist/memory.js.gz
	memoryGz []byte
	//go:embed dist/memory.js.br
	memoryBr []byte
)

// Client is the base client; Share the client with tabs that share one connection; Presence
// who is present on a channel; Codes the close-code table; Memory the transport memory.
var (
	Client   = newBundle("client.js", clientJS, clientGz, clientBr)
	Share    = newBundle("share.js", shareJS, shareGz, shareBr)
	Presence = newBundle("presence.js", presenceJS, presenceGz, presenceBr)
	Codes    = newBundle("codes.js", codesJS, codesGz, codesBr)
	Memory   = newBundle("memory.js", memoryJS, memoryGz, memoryBr)
)

// File is the base module's content-hashed file name, "client.<Hash>.js", which the server
// serves as immutable. (The share module is served at its stable name only: it imports
// "./client.js", which is revalidated, so a hashed name would not make it immutable.)
var File = "client." + Client.Hash + ".js"
