//go:build !linux

package netpoll

import "net"

type watch struct{}

func start(net.Conn, func()) (*watch, error) { return nil, ErrUnsupported }

func (*watch) arm() bool  { return false }
func (*watch) stop() bool { return false }
