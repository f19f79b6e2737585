//go:build !linux

package netpoll

import "net"

type watch struct{}

func start(net.Conn, func(), func(func())) (*watch, error) { return nil, ErrUnsupported }

func (*watch) arm() bool  { return false }
func (*watch) stop() bool { return false }

func peek(net.Conn) (data, closed bool) { return false, false }

func supported() bool { return false }

func tryRead(net.Conn, []byte) (int, error)  { return 0, ErrUnsupported }
func tryWrite(net.Conn, []byte) (int, error) { return 0, ErrUnsupported }

type writer struct{}

func newWriter(net.Conn) (*writer, error)    { return nil, ErrUnsupported }
func (*writer) tryWrite([]byte) (int, error) { return 0, ErrUnsupported }

type reader struct{}

func newReader(net.Conn) (*reader, error)   { return nil, ErrUnsupported }
func (*reader) tryRead([]byte) (int, error) { return 0, ErrUnsupported }
