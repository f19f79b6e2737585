package bridge

import (
	"net/http"
	"strconv"
	"strings"

	clientjs "github.com/ferryrt/ferry/client-js"
)

// mountClient registers the embedded JS client on mux under base:
//
//   - {base}/client.<hash>.js: the module under a content-hashed name, cached for a year
//     (Cache-Control: public, max-age=31536000, immutable);
//   - {base}/client.js: the same module at a stable URL, revalidated on every use
//     (Cache-Control: no-cache) against its strong ETag, which answers 304 when unchanged;
//   - {base}/share.js: the client with tabs that share one connection, which imports
//     ./client.js beside it, revalidated likewise; and the other opt-in entries likewise:
//     presence.js (imports ./client.js), codes.js and memory.js.
//
// Every one answers in the best precompressed form the request accepts (brotli, gzip or
// none), with Vary: Accept-Encoding.
func mountClient(mux *http.ServeMux, base string) {
	client := moduleHandler(clientjs.Client, "no-cache")
	mux.Handle(base+"/client.js", client)
	mux.Handle(base+"/"+clientjs.File, moduleHandler(clientjs.Client, "public, max-age=31536000, immutable"))
	mux.Handle(base+"/share.js", moduleHandler(clientjs.Share, "no-cache"))
	for _, b := range []clientjs.Bundle{clientjs.Presence, clientjs.Codes, clientjs.Memory} {
		mux.Handle(base+"/"+b.Name, moduleHandler(b, "no-cache"))
	}
}

// moduleHandler serves the module b with the given Cache-Control.
func moduleHandler(b clientjs.Bundle, cacheControl string) http.Handler {
	type form struct {
		body     []byte
		encoding string
		etag     string
	}
	forms := []form{
		{b.Brotli, "br", `"` + b.Hash + `-br"`},
		{b.Gzip, "gzip", `"` + b.Hash + `-gz"`},
		{b.Module, "", `"` + b.Hash + `"`},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		f := forms[len(forms)-1]
		for _, c := range forms[:len(forms)-1] {
			if acceptsEncoding(r.Header.Get("Accept-Encoding"), c.encoding) {
				f = c
				break
			}
		}
		h := w.Header()
		h.Set("Cache-Control", cacheControl)
		h.Set("Vary", "Accept-Encoding")
		// Modules may be imported from pages on other origins.
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("ETag", f.etag)
		if etagMatches(r.Header.Get("If-None-Match"), f.etag) {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		h.Set("Content-Type", "text/javascript; charset=utf-8")
		if f.encoding != "" {
			h.Set("Content-Encoding", f.encoding)
		}
		h.Set("Content-Length", strconv.Itoa(len(f.body)))
		if r.Method == http.MethodHead {
			return
		}
		w.Write(f.body)
	})
}

// acceptsEncoding reports whether an Accept-Encoding header accepts coding with a
// non-zero quality (RFC 9110 §12.5.3); "*" counts for any coding.
func acceptsEncoding(header, coding string) bool {
	for _, part := range strings.Split(header, ",") {
		name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		name = strings.ToLower(strings.TrimSpace(name))
		if name != coding && name != "*" {
			continue
		}
		q := strings.ReplaceAll(strings.ToLower(params), " ", "")
		if strings.HasPrefix(q, "q=0") && strings.Trim(strings.TrimPrefix(q, "q=0"), ".0") == "" {
			return false
		}
		return true
	}
	return false
}

// etagMatches reports whether an If-None-Match header names etag (or is "*"). Weak
// validators match too: If-None-Match uses the weak comparison (RFC 9110 §13.1.2).
func etagMatches(header, etag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == etag || t == "*" {
			return true
		}
	}
	return false
}
