package bridge

import (
	"github.com/labstack/echo/v4"
)

// MountEcho registers the server on an echo instance under Base. Echo's middleware
// (logging, recovery) wraps Ferry's handlers like any other route; mind that a timeout
// middleware would cut SSE streams and long-polls.
func (s *Server) MountEcho(e *echo.Echo) {
	h := echo.WrapHandler(s)
	e.Any(s.cfg.Base+"/*", h)
}
