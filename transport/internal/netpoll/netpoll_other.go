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

func (*writer) ready() bool                  { return false }
func (*writer) init(net.Conn) error          { return ErrUnsupported }
func (*writer) tryWrite([]byte) (int, error) { return 0, ErrUnsupported }

type reader struct{}

func (*reader) ready() bool                 { return false }
func (*reader) init(net.Conn) error         { return ErrUnsupported }
func (*reader) tryRead([]byte) (int, error) { return 0, ErrUnsupported }
