package bridge

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"strings"
	"testing"

	clientjs "github.com/ferryrt/ferry/client-js"
)

func getClient(t *testing.T, url string, header ...string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	// A Transport of our own: the default one would ask for gzip and undo it silently.
	tr := &http.Transport{DisableCompression: true}
	defer tr.CloseIdleConnections()
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// The client is one prebuilt module: at a content-hashed URL cached for a year, and at
// client.js revalidated against a strong ETag; precompressed as the request accepts. The
// sharing client, share.js, and the other opt-in entries (presence.js, codes.js,
// memory.js) are served the same way at their stable URLs; share.js imports the base
// module beside it.
func TestClientModuleServing(t *testing.T) {
	ts := newTestServer(t, Config{})
	hashed := ts.URL + "/" + clientjs.File
	if !strings.HasPrefix(clientjs.File, "client.") || len(clientjs.Client.Hash) != 16 {
		t.Fatalf("file name %q", clientjs.File)
	}

	for _, tc := range []struct {
		url, cache string
		b          clientjs.Bundle
	}{
		{ts.URL + "/client.js", "no-cache", clientjs.Client},
		{hashed, "public, max-age=31536000, immutable", clientjs.Client},
		{ts.URL + "/share.js", "no-cache", clientjs.Share},
		{ts.URL + "/presence.js", "no-cache", clientjs.Presence},
		{ts.URL + "/codes.js", "no-cache", clientjs.Codes},
		{ts.URL + "/memory.js", "no-cache", clientjs.Memory},
	} {
		resp, body := getClient(t, tc.url)
		if resp.StatusCode != 200 || !bytes.Equal(body, tc.b.Module) {
			t.Fatalf("%s: %d, %d bytes (want the module, %d)", tc.url, resp.StatusCode, len(body), len(tc.b.Module))
		}
		for k, want := range map[string]string{
			"Cache-Control": tc.cache, "Content-Type": "text/javascript; charset=utf-8", "Vary": "Accept-Encoding",
			"ETag": `"` + tc.b.Hash + `"`, "Content-Encoding": "", "Access-Control-Allow-Origin": "*",
		} {
			if got := resp.Header.Get(k); got != want {
				t.Errorf("%s: %s %q, want %q", tc.url, k, got, want)
			}
		}
		if !bytes.Contains(body, []byte("export{")) {
			t.Errorf("%s: not an ES module with exports: %.80q", tc.url, body)
		}

		// gzip and brotli: the precompressed bytes, each with its own strong ETag.
		resp, gz := getClient(t, tc.url, "Accept-Encoding", "gzip, deflate")
		if resp.Header.Get("Content-Encoding") != "gzip" || resp.Header.Get("ETag") != `"`+tc.b.Hash+`-gz"` {
			t.Fatalf("%s gzip: %v", tc.url, resp.Header)
		}
		zr, err := gzip.NewReader(bytes.NewReader(gz))
		if err != nil {
			t.Fatal(err)
		}
		if plain, _ := io.ReadAll(zr); !bytes.Equal(plain, tc.b.Module) {
			t.Fatalf("%s: the gzip form is not the module", tc.url)
		}
		resp, br := getClient(t, tc.url, "Accept-Encoding", "gzip, deflate, br")
		if resp.Header.Get("Content-Encoding") != "br" || !bytes.Equal(br, tc.b.Brotli) || len(br) >= len(gz) {
			t.Fatalf("%s br: %v, %d bytes (gzip %d)", tc.url, resp.Header, len(br), len(gz))
		}
		if resp, _ := getClient(t, tc.url, "Accept-Encoding", "br;q=0, gzip;q=0.5"); resp.Header.Get("Content-Encoding") != "gzip" {
			t.Errorf("%s: br;q=0 got %q", tc.url, resp.Header.Get("Content-Encoding"))
		}
		if resp, _ := getClient(t, tc.url, "Accept-Encoding", "identity"); resp.Header.Get("Content-Encoding") != "" {
			t.Errorf("%s: identity got %q", tc.url, resp.Header.Get("Content-Encoding"))
		}

		// Revalidation: 304 with no body for the same form, 200 for another one.
		etag := `"` + tc.b.Hash + `"`
		resp, body = getClient(t, tc.url, "If-None-Match", etag)
		if resp.StatusCode != http.StatusNotModified || len(body) != 0 || resp.Header.Get("ETag") != etag {
			t.Errorf("%s: revalidation got %d, %d bytes, ETag %q", tc.url, resp.StatusCode, len(body), resp.Header.Get("ETag"))
		}
		resp, _ = getClient(t, tc.url, "If-None-Match", `"other", W/`+etag)
		if resp.StatusCode != http.StatusNotModified {
			t.Errorf("%s: a list holding the ETag got %d", tc.url, resp.StatusCode)
		}
		resp, _ = getClient(t, tc.url, "If-None-Match", etag, "Accept-Encoding", "gzip")
		if resp.StatusCode != 200 {
			t.Errorf("%s: the plain ETag must not validate the gzip form: %d", tc.url, resp.StatusCode)
		}
	}

	if _, body := getClient(t, ts.URL+"/share.js"); !bytes.Contains(body, []byte(`"./client.js"`)) {
		t.Errorf("share.js does not import ./client.js: %.200q", body)
	}

	// Another hash, the old module directory, and other methods: nothing.
	for _, path := range []string{"/client.0000000000000000.js", "/client/index.js", "/client/"} {
		if resp, _ := getClient(t, ts.URL+path); resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", path, resp.StatusCode)
		}
	}
	req, _ := http.NewRequest(http.MethodPost, hashed, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST: %d, Allow %q", resp.StatusCode, resp.Header.Get("Allow"))
	}
	http.DefaultClient.CloseIdleConnections()
}

func TestAcceptsEncoding(t *testing.T) {
	for _, tc := range []struct {
		header, coding string
		want           bool
	}{
		{"gzip", "gzip", true},
		{"GZIP;q=1.0", "gzip", true},
		{"deflate, gzip;q=0.5", "gzip", true},
		{"gzip;q=0", "gzip", false},
		{"gzip; q=0.000", "gzip", false},
		{"gzip;q=0.001", "gzip", true},
		{"*", "br", true},
		{"*;q=0", "br", false},
		{"", "gzip", false},
		{"x-gzip", "gzip", false},
	} {
		if got := acceptsEncoding(tc.header, tc.coding); got != tc.want {
			t.Errorf("acceptsEncoding(%q, %q) = %v", tc.header, tc.coding, got)
		}
	}
}
