package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
)

// The management API's client side of HTTP/1.1 (RFC 9112), as much as the
// daemon's server (Go's net/http) answers: one request per connection
// (Connection: close), a body of Content-Length bytes, chunked (what a
// large or streamed answer comes as), or up to the end of the connection.

// maxHeaderLine bounds a status or header line, and maxHeaderLines their
// number.
const (
	maxHeaderLine  = 64 << 10
	maxHeaderLines = 100
)

// httpStatus is an answer's status: code 200, text "200 OK".
type httpStatus struct {
	code int
	text string
}

// requestBody is a request's body: size bytes read from r.
type requestBody struct {
	r    io.Reader
	size int64
}

// bytesBody is a body held in memory.
func bytesBody(b []byte) *requestBody {
	return &requestBody{r: bytes.NewReader(b), size: int64(len(b))}
}

// roundTrip sends a request over the unix socket and reads the answer's
// status and headers; the body is read from rc, which closes the
// connection. Cancelling ctx closes it too, ending a streamed answer.
func roundTrip(ctx context.Context, socket, method, path string, body *requestBody) (httpStatus, io.ReadCloser, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return httpStatus{}, nil, err
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	rc := &answer{ctx: ctx, conn: conn, stop: stop}
	var head bytes.Buffer
	fmt.Fprintf(&head, "%s %s HTTP/1.1\r\nHost: membrane\r\nUser-Agent: membrane\r\nConnection: close\r\n", method, path)
	if body != nil {
		fmt.Fprintf(&head, "Content-Type: application/octet-stream\r\nContent-Length: %d\r\n", body.size)
	}
	head.WriteString("\r\n")
	werr := writeRequest(conn, head.Bytes(), body)
	var short *shortBodyError
	if errors.As(werr, &short) {
		// The server still waits for the rest of the body: no answer
		// will come.
		rc.Close()
		return httpStatus{}, nil, werr
	}
	// A server may answer before it has read the whole request (a body
	// over its limit) and close the connection, failing the write: its
	// answer says more than the write's error, so it is read either way.
	r := bufio.NewReaderSize(conn, 4096)
	status, length, chunked, err := readHead(r)
	if err != nil {
		rc.Close()
		if werr != nil {
			err = werr
		}
		return httpStatus{}, nil, ctxErr(ctx, err)
	}
	switch {
	case chunked:
		rc.body = &chunkedReader{r: r}
	case length >= 0:
		rc.body = &lengthReader{r: r, left: length}
	default:
		rc.body = r // up to the end of the connection
	}
	return status, rc, nil
}

// writeRequest sends the head, then the body. A small body goes in the
// same write; a large one is streamed through a buffer rather than read
// whole first: a policy file can be megabytes, which a CLI call would
// otherwise spend milliseconds faulting into memory.
func writeRequest(conn net.Conn, head []byte, body *requestBody) error {
	if body == nil {
		_, err := conn.Write(head)
		return err
	}
	if body.size <= maxInlineBody {
		buf := append(head, make([]byte, body.size)...)
		if n, err := io.ReadFull(body.r, buf[len(head):]); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
				err = nil
			}
			return &shortBodyError{sent: int64(n), size: body.size, err: err}
		}
		_, err := conn.Write(buf)
		return err
	}
	if _, err := conn.Write(head); err != nil {
		return err
	}
	// Copied by hand rather than with io.Copy, to tell the body's read
	// errors from the connection's write errors.
	buf := make([]byte, min(body.size, sendBuffer))
	var sent int64
	for sent < body.size {
		n, rerr := body.r.Read(buf[:min(int64(len(buf)), body.size-sent)])
		if n > 0 {
			if _, err := conn.Write(buf[:n]); err != nil {
				return err
			}
			sent += int64(n)
		}
		if rerr != nil && sent < body.size {
			if errors.Is(rerr, io.EOF) {
				rerr = nil
			}
			return &shortBodyError{sent: sent, size: body.size, err: rerr}
		}
	}
	return nil
}

// shortBodyError: a request's body could not be read to its end.
type shortBodyError struct {
	sent, size int64
	err        error // nil when the body ended early
}

func (e *shortBodyError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("request body ended after %d of %d bytes (did the file shrink?)", e.sent, e.size)
	}
	return fmt.Sprintf("request body, after %d of %d bytes: %v", e.sent, e.size, e.err)
}

func (e *shortBodyError) Unwrap() error { return e.err }

// maxInlineBody is the largest body sent in one write with its head;
// sendBuffer is the buffer larger ones go through.
const (
	maxInlineBody = 64 << 10
	sendBuffer    = 256 << 10
)

// ctxErr prefers the context's error to what its cancellation caused.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// answer is an answer's body on its connection.
type answer struct {
	ctx  context.Context
	conn net.Conn
	stop func() bool
	body io.Reader
}

// Read reads the body; once ctx is cancelled (which closes the
// connection), the error is ctx's.
func (a *answer) Read(p []byte) (int, error) {
	n, err := a.body.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		err = ctxErr(a.ctx, err)
	}
	return n, err
}

func (a *answer) Close() error {
	a.stop()
	return a.conn.Close()
}

// lengthReader reads a body of a known length: ending early is an error.
type lengthReader struct {
	r    io.Reader
	left int64
}

func (l *lengthReader) Read(p []byte) (int, error) {
	if l.left == 0 {
		return 0, io.EOF
	}
	n, err := l.r.Read(p[:min(int64(len(p)), l.left)])
	l.left -= int64(n)
	if errors.Is(err, io.EOF) && l.left > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// readHead reads the status line and the headers of an answer, skipping
// informational (1xx) answers, and tells how its body is framed: length
// (-1 for none given), or chunked.
func readHead(r *bufio.Reader) (status httpStatus, length int64, chunked bool, err error) {
	for {
		line, err := readLine(r)
		if err != nil {
			return status, 0, false, fmt.Errorf("read answer: %w", err)
		}
		// HTTP-version SP 3DIGIT [SP reason-phrase]
		proto, rest, ok := strings.Cut(line, " ")
		if !ok || !strings.HasPrefix(proto, "HTTP/1.") || len(rest) < 3 || !isDigits(rest[:3], 10) ||
			(len(rest) > 3 && rest[3] != ' ') || rest[0] == '0' {
			return status, 0, false, fmt.Errorf("malformed status line %q", line)
		}
		code, _ := strconv.Atoi(rest[:3])
		status = httpStatus{code: code, text: rest}
		length, chunked = -1, false
		for n := 0; ; n++ {
			h, err := readLine(r)
			if err != nil {
				return status, 0, false, fmt.Errorf("read answer headers: %w", err)
			}
			if h == "" {
				break
			}
			if n == maxHeaderLines {
				return status, 0, false, errors.New("too many answer headers")
			}
			name, value, ok := strings.Cut(h, ":")
			if !ok {
				return status, 0, false, fmt.Errorf("malformed header %q", h)
			}
			value = strings.TrimSpace(value)
			switch {
			case strings.EqualFold(name, "Content-Length"):
				n, err := strconv.ParseInt(value, 10, 64)
				if err != nil || !isDigits(value, 10) || (length >= 0 && n != length) {
					return status, 0, false, fmt.Errorf("malformed Content-Length %q", value)
				}
				length = n
			case strings.EqualFold(name, "Transfer-Encoding"):
				if !strings.EqualFold(value, "chunked") {
					return status, 0, false, fmt.Errorf("unsupported Transfer-Encoding %q", value)
				}
				chunked = true
			}
		}
		if code >= 200 {
			return status, length, chunked, nil
		}
	}
}

// isDigits reports whether s is one or more digits of the base (10 or
// 16): no sign, no space.
func isDigits(s string, base int) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || base == 16 && ('a' <= c|0x20 && c|0x20 <= 'f')) {
			return false
		}
	}
	return s != ""
}

// readLine reads a line ending in CRLF (or LF) and returns it without.
func readLine(r *bufio.Reader) (string, error) {
	var line []byte
	for {
		part, err := r.ReadSlice('\n')
		line = append(line, part...)
		if len(line) > maxHeaderLine {
			return "", errors.New("line too long")
		}
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return "", err
		}
	}
	return strings.TrimSuffix(strings.TrimSuffix(string(line), "\n"), "\r"), nil
}

// chunkedReader reads a chunked body: chunks of a hexadecimal size (and
// extensions, ignored), the last of size 0, then trailers, ignored.
type chunkedReader struct {
	r    *bufio.Reader
	left int64 // bytes left in the current chunk
	done bool
	err  error
}

func (c *chunkedReader) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	if c.left == 0 && !c.done {
		if c.err = c.next(); c.err != nil {
			return 0, c.err
		}
	}
	if c.done {
		return 0, io.EOF
	}
	n, err := c.r.Read(p[:min(int64(len(p)), c.left)])
	c.left -= int64(n)
	if c.left == 0 && err == nil {
		err = c.crlf() // the chunk's end
	}
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	c.err = err
	return n, err
}

// next reads a chunk's size line; at the last chunk, the trailers.
func (c *chunkedReader) next() error {
	line, err := readLine(c.r)
	if err != nil {
		return err
	}
	size, _, _ := strings.Cut(line, ";")
	size = strings.TrimSpace(size)
	n, err := strconv.ParseInt(size, 16, 64)
	if err != nil || !isDigits(size, 16) {
		return fmt.Errorf("malformed chunk size %q", line)
	}
	if n > 0 {
		c.left = n
		return nil
	}
	c.done = true
	for { // trailers, up to the empty line
		line, err := readLine(c.r)
		if err != nil {
			return err
		}
		if line == "" {
			return nil
		}
	}
}

func (c *chunkedReader) crlf() error {
	line, err := readLine(c.r)
	if err == nil && line != "" {
		err = fmt.Errorf("chunk followed by %q, want CRLF", line)
	}
	return err
}
