// Package clientjs embeds the JavaScript client so that the server can serve it with no
// build step: GET {base}/client.js is the entry module, and the modules it imports are
// served from {base}/client/.
package clientjs

import (
	"embed"
	"io/fs"
)

//go:embed src
var src embed.FS

// FS holds the client's ES modules and type declarations (the contents of src/).
var FS, _ = fs.Sub(src, "src")

// Entry is the module served at {base}/client.js. Relative imports resolve against its
// URL, so "./client/index.js" is {base}/client/index.js.
const Entry = "export * from './client/index.js';\n"
