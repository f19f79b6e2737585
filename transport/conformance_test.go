package transport_test

// RFC 6455 conformance of /ferry/ws, in the manner of the Autobahn test suite: raw frames
// written on a socket, and for each case the exact frames the server answers with, the
// exact close code, and the end of TCP right after the close handshake. Every case runs
// in both I/O modes (Config.IO): pooled (a watched socket, pings and pongs handled by
// peekFrame, data by gorilla) and plain, a goroutine-per-connection reader (gorilla for
// everything).
// closeGuard, under both, handles every close frame.

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/ferryrt/ferry/transport"
)

// Frame opcodes and bits, as a client writes them.
const (
	opCont   = 0x0
	opText   = 0x1
	opBinary = 0x2
	opClose  = 0x8
	opPing   = 0x9
	opPong   = 0xA
	fin      = 0x80
)

// wsFrame encodes one client frame: b0 is the first byte (FIN, RSV, opcode).
func wsFrame(b0 byte, payload []byte, masked bool) []byte {
	out := []byte{b0}
	var m byte
	if masked {
		m = 0x80
	}
	switch n := len(payload); {
	case n <= 125:
		out = append(out, m|byte(n))
	case n <= 0xffff:
		out = append(out, m|126, byte(n>>8), byte(n))
	default:
		out = append(out, m|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	if !masked {
		return append(out, payload...)
	}
	key := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	out = append(out, key[:]...)
	for i, c := range payload {
		out = append(out, c^key[i%4])
	}
	return out
}

func frameOf(b0 byte, payload string) []byte { return wsFrame(b0, []byte(payload), true) }

func closeFrame(code int, reason string) []byte {
	return wsFrame(fin|opClose, append(binary.BigEndian.AppendUint16(nil, uint16(code)), reason...), true)
}

// sendFrame is a valid Ferry send frame, acknowledged with its seq.
func sendFrame(seq int, d string) string {
	b, _ := json.Marshal(d)
	return `{"t":"send","seq":` + strconv.Itoa(seq) + `,"d":` + string(b) + `}`
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// expect is a frame the server must send: a pong with a payload, or the ack of a seq.
type expect struct {
	pong *string
	ack  int
}

func pong(p string) expect { return expect{pong: &p} }
func ack(seq int) expect   { return expect{ack: seq} }

// wsCase is one conformance case: writes (each its own Write call, so a frame can be
// chopped), the frames expected in order, then the close code the server must send.
// close 0 means the connection must still be up: the client then closes with 1000 and
// the server must answer 1000. clientClosed says the writes end with the client's
// (valid) close frame, so the server's close is its answer.
type wsCase struct {
	name         string
	writes       [][]byte
	want         []expect
	close        int
	clientClosed bool
}

func conformanceCases() []wsCase {
	p125 := strings.Repeat("\xfe", 125)
	ping125 := frameOf(fin|opPing, p125)
	var manyPings [][]byte
	var manyPongs []expect
	for i := range 10 {
		manyPings = append(manyPings, frameOf(fin|opPing, strconv.Itoa(i)))
		manyPongs = append(manyPongs, pong(strconv.Itoa(i)))
	}
	utf := sendFrame(1, "κόσμε € 𝄞")
	cut := strings.Index(utf, "𝄞") + 2 // in the middle of a 4-byte sequence
	bad := `{"t":"send","seq":1,"d":"` + "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80" + `"}`
	badCut := strings.Index(bad, "\xed")
	big := sendFrame(1, strings.Repeat("x", 2000))
	cases := []wsCase{
		// Pings and pongs (Autobahn 2.x).
		{name: "ping empty", writes: [][]byte{frameOf(fin|opPing, "")}, want: []expect{pong("")}},
		{name: "ping 125 bytes", writes: [][]byte{ping125}, want: []expect{pong(p125)}},
		{name: "ping 126 bytes", writes: [][]byte{frameOf(fin|opPing, p125+"x")}, close: 1002},
		{name: "ping chopped", writes: [][]byte{ping125[:1], ping125[1:2], ping125[2:7], ping125[7:60], ping125[60:]}, want: []expect{pong(p125)}},
		{name: "ten pings in one write", writes: [][]byte{cat(manyPings...)}, want: manyPongs},
		{name: "unsolicited pong", writes: [][]byte{frameOf(fin|opPong, "x"), frameOf(fin|opPing, "after")}, want: []expect{pong("after")}},
		{name: "ping binary payload", writes: [][]byte{wsFrame(fin|opPing, []byte{0, 1, 0xff, 0x80}, true)}, want: []expect{pong("\x00\x01\xff\x80")}},
		{name: "ping then text in one write", writes: [][]byte{cat(frameOf(fin|opPing, "a"), frameOf(fin|opText, sendFrame(1, "x")))}, want: []expect{pong("a"), ack(1)}},

		// Reserved bits and opcodes (3.x, 4.x).
		{name: "RSV1 on text", writes: [][]byte{frameOf(fin|0x40|opText, sendFrame(1, "x"))}, close: 1002},
		{name: "RSV2 on text", writes: [][]byte{frameOf(fin|0x20|opText, sendFrame(1, "x"))}, close: 1002},
		{name: "RSV3 on ping", writes: [][]byte{frameOf(fin|0x10|opPing, "x")}, close: 1002},
		// gorilla sends its close from the reader, which may overtake the writer's ack.
		{name: "RSV after a good frame", writes: [][]byte{cat(frameOf(fin|opText, sendFrame(1, "x")), frameOf(fin|0x70|opText, "x"))}, close: 1002},
		{name: "RSV on close", writes: [][]byte{wsFrame(fin|0x40|opClose, []byte{3, 232}, true)}, close: 1002},

		// Fragmentation (5.x).
		{name: "fragmented text", writes: [][]byte{frameOf(opText, utf[:5]), frameOf(opCont, utf[5:9]), frameOf(fin|opCont, utf[9:])}, want: []expect{ack(1)}},
		{name: "fragments with a ping between", writes: [][]byte{cat(frameOf(opText, utf[:5]), frameOf(fin|opPing, "mid"), frameOf(fin|opCont, utf[5:]))}, want: []expect{pong("mid"), ack(1)}},
		{name: "fragments with a pong between", writes: [][]byte{frameOf(opText, utf[:5]), frameOf(fin|opPong, "x"), frameOf(fin|opCont, utf[5:])}, want: []expect{ack(1)}},
		{name: "fragments one byte each", writes: fragments(utf, 1), want: []expect{ack(1)}},
		{name: "continuation without start", writes: [][]byte{frameOf(fin|opCont, "x")}, close: 1002},
		{name: "text inside a fragmented message", writes: [][]byte{frameOf(opText, utf[:5]), frameOf(fin|opText, utf)}, close: 1002},
		{name: "fragmented ping", writes: [][]byte{frameOf(opPing, "a"), frameOf(fin|opCont, "b")}, close: 1002},
		{name: "close inside a fragmented message", writes: [][]byte{frameOf(opText, utf[:5]), closeFrame(1000, "")}, close: 1000, clientClosed: true},

		// UTF-8 (6.x).
		{name: "UTF-8 whole", writes: [][]byte{frameOf(fin|opText, utf)}, want: []expect{ack(1)}},
		{name: "UTF-8 split inside a character", writes: [][]byte{frameOf(opText, utf[:cut]), frameOf(fin|opCont, utf[cut:])}, want: []expect{ack(1)}},
		{name: "invalid UTF-8 whole", writes: [][]byte{frameOf(fin|opText, bad)}, close: 1007},
		{name: "invalid UTF-8 split", writes: [][]byte{frameOf(opText, bad[:badCut+1]), frameOf(fin|opCont, bad[badCut+1:])}, close: 1007},
		{name: "invalid UTF-8 truncated at the end", writes: [][]byte{frameOf(fin|opText, `{"t":"send","seq":1,"d":"x"}`+"\xe2\x82")}, close: 1007},

		// Close frames (7.x).
		{name: "close empty", writes: [][]byte{wsFrame(fin|opClose, nil, true)}, close: 1005, clientClosed: true},
		{name: "close 1-byte payload", writes: [][]byte{wsFrame(fin|opClose, []byte{0x03}, true)}, close: 1002},
		{name: "close with reason", writes: [][]byte{closeFrame(1000, "bye κόσμε")}, close: 1000, clientClosed: true},
		{name: "close 123-byte reason", writes: [][]byte{closeFrame(1000, strings.Repeat("r", 123))}, close: 1000, clientClosed: true},
		{name: "close 124-byte reason", writes: [][]byte{closeFrame(1000, strings.Repeat("r", 124))}, close: 1002},
		{name: "close reason not UTF-8", writes: [][]byte{closeFrame(1000, "a\xffb")}, close: 1007},
		{name: "close chopped", writes: [][]byte{closeFrame(1001, "x")[:3], closeFrame(1001, "x")[3:]}, close: 1001, clientClosed: true},
		{name: "close not final", writes: [][]byte{wsFrame(opClose, []byte{3, 232}, true)}, close: 1002},
		{name: "close unmasked", writes: [][]byte{wsFrame(fin|opClose, []byte{3, 232}, false)}, close: 1002},
		{name: "text after close", writes: [][]byte{cat(closeFrame(1000, ""), frameOf(fin|opText, sendFrame(1, "late")))}, close: 1000, clientClosed: true},
		{name: "ping after close", writes: [][]byte{cat(closeFrame(1000, ""), frameOf(fin|opPing, "late"))}, close: 1000, clientClosed: true},
		{name: "close after a message", writes: [][]byte{cat(frameOf(fin|opText, sendFrame(1, "x")), closeFrame(4000, ""))}, close: 4000, clientClosed: true},

		// Masking (RFC 6455 §5.1).
		{name: "unmasked text", writes: [][]byte{wsFrame(fin|opText, []byte(sendFrame(1, "x")), false)}, close: 1002},
		{name: "unmasked ping", writes: [][]byte{wsFrame(fin|opPing, []byte("x"), false)}, close: 1002},

		// Sizes (9.x, against the read limit: MaxMessageBytes 1024 plus 512 of frame).
		{name: "payload at the limit", writes: [][]byte{frameOf(fin|opText, sendFrame(1, strings.Repeat("x", 1000)))}, want: []expect{ack(1)}},
		{name: "frame over the read limit", writes: [][]byte{frameOf(fin|opText, big)}, close: 1009},
		{name: "fragments over the read limit", writes: [][]byte{frameOf(opText, big[:1000]), frameOf(fin|opCont, big[1000:])}, close: 1009},
		{name: "16-bit length ping", writes: [][]byte{{fin | opPing, 0x80 | 126, 0, 5, 1, 2, 3, 4, 'a', 'b', 'c', 'd', 'e'}}, close: 1002},
	}
	for _, op := range []byte{3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF} {
		cases = append(cases, wsCase{name: fmt.Sprintf("reserved opcode %d", op), writes: [][]byte{frameOf(fin|op, "")}, close: 1002})
	}
	for _, code := range []int{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999} {
		cases = append(cases, wsCase{name: fmt.Sprintf("close code %d", code), writes: [][]byte{closeFrame(code, "")}, close: code, clientClosed: true})
	}
	for _, code := range []int{0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535} {
		cases = append(cases, wsCase{name: fmt.Sprintf("invalid close code %d", code), writes: [][]byte{closeFrame(code, "")}, close: 1002})
	}
	return cases
}

// fragments splits a text message into frames of n payload bytes.
func fragments(msg string, n int) [][]byte {
	var out [][]byte
	for i := 0; i < len(msg); i += n {
		op := byte(opCont)
		if i == 0 {
			op = opText
		}
		if i+n >= len(msg) {
			op |= fin
		}
		out = append(out, frameOf(op, msg[i:min(i+n, len(msg))]))
	}
	return out
}

// conformanceServer starts the handlers over a fakeSessions in the given I/O mode, which
// acknowledges send frames and allows messages of 1024 bytes.
func conformanceServer(t *testing.T, mode transport.IOMode) string {
	t.Helper()
	return newTestServer(t, func(c *transport.Config) { c.IO = mode }).URL
}

func TestWebSocketConformance(t *testing.T) {
	// A server that waits out the close handshake's deadline instead of closing TCP when
	// the handshake is done would hold each case for a minute: the read guard below (10 s)
	// sees it.
	defer transport.SetCloseHandshake(time.Minute)()
	for _, mode := range []transport.IOMode{transport.IOPooled, transport.IOPlain} {
		t.Run(mode.String(), func(t *testing.T) {
			base := conformanceServer(t, mode)
			for _, tc := range conformanceCases() {
				t.Run(tc.name, func(t *testing.T) { runCase(t, base, tc) })
			}
			// A close reason longer than a close frame holds is cut at a character, not
			// in the middle of one: here a bad cursor, whose reason quotes the channel.
			t.Run("long reason cut at a character", func(t *testing.T) {
				ch := "x" + strings.Repeat("€", 39)
				c := dialRawQuery(t, base, "cursor="+url.QueryEscape(ch+"="))
				code, reason := c.readUntilClose(t, nil)
				if code != 4100 || !utf8.ValidString(reason) || len(reason) > 123 || !strings.HasPrefix(reason, `bad channel name "x€`) {
					t.Fatalf("close %d %q (%d bytes), want 4100 with valid UTF-8 within 123 bytes", code, reason, len(reason))
				}
			})
			// The server closes (4001, superseded by a newer attachment of the session);
			// the client answers; TCP ends at once.
			t.Run("server closes", func(t *testing.T) {
				c := dialRaw(t, base, "")
				newer := dialRaw(t, base, c.cred)
				defer newer.conn.Close()
				code, _ := c.readUntilClose(t, nil)
				if code != 4001 {
					t.Fatalf("close %d, want 4001", code)
				}
				c.write(t, closeFrame(4001, ""))
				c.expectEOF(t)
			})
		})
	}
}

func runCase(t *testing.T, base string, tc wsCase) {
	c := dialRaw(t, base, "")
	for _, w := range tc.writes {
		// The server may fail the connection before a write ends (a frame over the
		// limit is refused from its header); what it answered is checked below.
		if _, err := c.conn.Write(w); err != nil {
			t.Logf("write: %v", err)
			break
		}
	}
	want := tc.close
	if want == 0 {
		// Still up: the client closes now.
		c.readExpected(t, tc.want)
		c.write(t, closeFrame(1000, "done"))
		tc.clientClosed, want, tc.want = true, 1000, nil
	}
	code, reason := c.readUntilClose(t, tc.want)
	if code != want {
		t.Fatalf("server closed with %d %q, want %d", code, reason, want)
	}
	if !tc.clientClosed && !failsAtOnce(tc) {
		c.write(t, closeFrame(code, "")) // the client's half of the handshake
	}
	c.expectEOF(t)
}

// failsAtOnce says whether the server's close answers a close frame of the client's that
// was invalid: the client has closed its side already, so it sends no other close.
func failsAtOnce(tc wsCase) bool {
	for _, w := range tc.writes {
		if len(w) > 0 && w[0]&0x0f == opClose {
			return true
		}
	}
	return false
}

// rawWS is a client on a bare socket.
type rawWS struct {
	conn net.Conn
	br   *bufio.Reader
	cred string
}

// dialRaw negotiates a session (or uses cred), upgrades a socket to WebSocket and reads
// the hello frame.
func dialRaw(t *testing.T, base, cred string) *rawWS {
	t.Helper()
	c := dialWS(t, base, cred, "")
	// The hello frame proves the attachment is up before the case's frames go out.
	if op, p, err := c.readFrame(); err != nil || op != opText || !bytes.Contains(p, []byte(`"t":"hello"`)) {
		t.Fatalf("first frame %x %q %v, want hello", op, p, err)
	}
	return c
}

// dialRawQuery upgrades a socket of a new session with more query parameters.
func dialRawQuery(t *testing.T, base, query string) *rawWS {
	t.Helper()
	return dialWS(t, base, "", "&"+query)
}

func dialWS(t *testing.T, base, cred, query string) *rawWS {
	t.Helper()
	if cred == "" {
		resp, err := http.Post(base+"/ferry/negotiate", "application/json", nil)
		if err != nil {
			t.Fatal(err)
		}
		var n struct{ Session string }
		json.NewDecoder(resp.Body).Decode(&n)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("negotiate: %s", resp.Status)
		}
		cred = n.Session
	}
	u, _ := url.Parse(base)
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	key := make([]byte, 16)
	rand.Read(key)
	fmt.Fprintf(conn, "GET /ferry/ws?session=%s%s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", url.QueryEscape(cred), query, u.Host, base64.StdEncoding.EncodeToString(key))
	c := &rawWS{conn: conn, br: bufio.NewReader(conn), cred: cred}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second)) // a failure guard only
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	return c
}

func (c *rawWS) write(t *testing.T, b []byte) {
	if _, err := c.conn.Write(b); err != nil {
		t.Logf("write: %v", err) // the server may have closed; the EOF check says the rest
	}
}

// readFrame reads one server frame (never masked, never fragmented by Ferry).
func (c *rawWS) readFrame() (op byte, payload []byte, err error) {
	var h [2]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return 0, nil, err
	}
	if h[0]&0x70 != 0 || h[0]&fin == 0 || h[1]&0x80 != 0 {
		return 0, nil, fmt.Errorf("server frame header %x: reserved bits, fragmented or masked", h)
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		_, err = io.ReadFull(c.br, b[:])
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		_, err = io.ReadFull(c.br, b[:])
		n = binary.BigEndian.Uint64(b[:])
	}
	if err != nil || n > 1<<20 {
		return 0, nil, fmt.Errorf("frame length %d: %v", n, err)
	}
	payload = make([]byte, n)
	_, err = io.ReadFull(c.br, payload)
	return h[0] & 0x0f, payload, err
}

// readExpected reads frames until every expected one has come, in order; others (the
// server's heartbeat frames) are skipped, a close fails the case.
func (c *rawWS) readExpected(t *testing.T, want []expect) {
	t.Helper()
	for len(want) > 0 {
		op, p, err := c.readFrame()
		if err != nil {
			t.Fatalf("waiting for %+v: %v", want[0], err)
		}
		if op == opClose {
			t.Fatalf("closed with %d %q while waiting for %+v", closeCode(p), p[min(2, len(p)):], want[0])
		}
		if matches(want[0], op, p) {
			want = want[1:]
		} else if op == opPong {
			t.Fatalf("pong %q, want %+v", p, want[0])
		}
	}
}

func matches(e expect, op byte, p []byte) bool {
	if e.pong != nil {
		return op == opPong && string(p) == *e.pong
	}
	var f struct {
		T   string
		Seq int
		Err *struct{ Code int }
	}
	return op == opText && json.Unmarshal(p, &f) == nil && f.T == "ack" && f.Seq == e.ack && f.Err == nil
}

// readUntilClose reads the expected frames, then up to the server's close frame, and
// returns its code (1005 for an empty one).
func (c *rawWS) readUntilClose(t *testing.T, want []expect) (int, string) {
	t.Helper()
	for {
		op, p, err := c.readFrame()
		if err != nil {
			t.Fatalf("no close frame: %v", err)
		}
		if op == opClose {
			if len(want) > 0 {
				t.Fatalf("closed with %d before %+v", closeCode(p), want[0])
			}
			if len(p) == 1 || len(p) > 125 {
				t.Fatalf("server's close payload of %d bytes", len(p))
			}
			return closeCode(p), string(p[min(2, len(p)):])
		}
		if len(want) > 0 && matches(want[0], op, p) {
			want = want[1:]
		}
	}
}

func closeCode(p []byte) int {
	if len(p) < 2 {
		return 1005
	}
	return int(binary.BigEndian.Uint16(p))
}

// expectEOF reads to the end of the connection: after its close frame the server sends
// nothing, and closes TCP once the handshake is done, not at the handshake's deadline
// (one minute here).
func (c *rawWS) expectEOF(t *testing.T) {
	t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	rest, err := io.ReadAll(c.br)
	var ne net.Error
	switch {
	case len(rest) > 0:
		t.Fatalf("%d bytes after the close frame: %q", len(rest), rest[:min(len(rest), 40)])
	case errors.As(err, &ne) && ne.Timeout():
		t.Fatal("TCP still open 10 s after the close handshake")
	case err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset"):
		t.Fatalf("reading to EOF: %v", err)
	}
}
