package bridge

import (
	"net/http"
	"strings"

	clientjs "github.com/ferryrt/ferry/client-js"
)

// clientHandler serves the embedded JS client: {base}/client.js and {base}/client/*.
func clientHandler(base string) http.Handler {
	files := http.StripPrefix(base+"/client/", http.FileServer(http.FS(clientjs.FS)))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		// The client changes with the server binary; revalidate rather than cache blindly.
		w.Header().Set("Cache-Control", "no-cache")
		// Modules may be imported from pages on other origins.
		w.Header().Set("Access-Control-Allow-Origin", "*")
		if r.URL.Path == base+"/client.js" {
			w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
			w.Write([]byte(clientjs.Entry))
			return
		}
		if strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r) // no directory listings
			return
		}
		if strings.HasSuffix(r.URL.Path, ".js") {
			w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		}
		files.ServeHTTP(w, r)
	})
}
