package main

import (
	"embed"
	"encoding/json"
	"io/fs"
	"net/http"

	"github.com/labstack/echo/v4"
)

//go:embed web
var webFS embed.FS

// mountDemo serves the demo pages at /. The pages read the endpoints' base path from
// /js/config.js, so they follow --base.
func mountDemo(e *echo.Echo, base string) {
	sub, _ := fs.Sub(webFS, "web")
	files := http.FileServer(http.FS(sub))
	b, _ := json.Marshal(base)
	config := []byte("export const BASE = " + string(b) + ";\n")
	e.GET("/js/config.js", func(c echo.Context) error {
		return c.Blob(http.StatusOK, "text/javascript; charset=utf-8", config)
	})
	e.Match([]string{http.MethodGet, http.MethodHead}, "/*", echo.WrapHandler(files))
}
