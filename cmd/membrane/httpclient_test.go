package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/membrane-net/membrane/internal/apiview"
)

// serve serves h on a unix socket, as the daemon serves its API (net/http),
// until the test ends, and returns the socket.
func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return sock
}

// serveRaw answers every connection on a unix socket with answer,
// whatever the request, and returns the socket.
func serveRaw(t *testing.T, answer string) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "raw.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for { // the request head
					line, err := r.ReadString('\n')
					if err != nil || line == "\r\n" {
						break
					}
				}
				io.WriteString(c, answer)
			}()
		}
	}()
	return sock
}

func TestClientReadsWhatNetHTTPServes(t *testing.T) {
	big := strings.Repeat("x", 200_000)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /small", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"revision":7}`)
	})
	mux.HandleFunc("GET /big", func(w http.ResponseWriter, r *http.Request) { // no length: chunked
		json.NewEncoder(w).Encode(map[string]string{"big": big})
	})
	mux.HandleFunc("PUT /echo", func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil || r.ContentLength != int64(len(b)) {
			http.Error(w, fmt.Sprintf("body %d bytes, Content-Length %d: %v", len(b), r.ContentLength, err), http.StatusBadRequest)
			return
		}
		sum := sha256.Sum256(b)
		json.NewEncoder(w).Encode(map[string]any{"len": len(b), "sha256": hex.EncodeToString(sum[:])})
	})
	mux.HandleFunc("DELETE /gone", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, `{"Err":"not found: no policy rule named \"x\""}`)
	})
	mux.HandleFunc("GET /teapot", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTeapot)
		fmt.Fprint(w, "short and stout")
	})
	c := newAPIClient(serve(t, mux))
	ctx := context.Background()

	var rev apiview.Revision
	if err := c.call(ctx, "GET", "/small", nil, &rev); err != nil || rev.Revision != 7 {
		t.Errorf("small answer: %+v, %v", rev, err)
	}
	var got map[string]string
	if err := c.call(ctx, "GET", "/big", nil, &got); err != nil || got["big"] != big {
		t.Errorf("chunked answer: %d bytes, %v", len(got["big"]), err)
	}
	for _, n := range []int{0, 1, maxInlineBody, maxInlineBody + 1, sendBuffer + 7, 3 << 20} {
		body := make([]byte, n)
		rand.Read(body)
		sum := sha256.Sum256(body)
		want := map[string]any{"len": float64(n), "sha256": hex.EncodeToString(sum[:])}
		var echo map[string]any
		if err := c.call(ctx, "PUT", "/echo", bytesBody(body), &echo); err != nil || !reflect.DeepEqual(echo, want) {
			t.Errorf("PUT of %d bytes: %v, %v", n, echo, err)
		}
		// The same as a file, as `membrane policy import FILE` sends it.
		file := filepath.Join(t.TempDir(), "policy.json")
		if err := os.WriteFile(file, body, 0o600); err != nil {
			t.Fatal(err)
		}
		fb, done, err := policyBody(file)
		if err != nil {
			t.Fatal(err)
		}
		echo = nil
		if err := c.call(ctx, "PUT", "/echo", fb, &echo); err != nil || !reflect.DeepEqual(echo, want) {
			t.Errorf("PUT of a file of %d bytes: %v, %v", n, echo, err)
		}
		done()
	}
	// A file that ends before the length announced (it shrank after its
	// size was taken) fails the call, and the server gets no whole body.
	for _, n := range []int64{2, sendBuffer + 1} {
		short := bytesBody(make([]byte, n))
		short.size = 2 * n
		want := fmt.Sprintf("ended after %d of %d bytes", n, 2*n)
		if err := c.call(ctx, "PUT", "/echo", short, nil); err == nil || !strings.HasPrefix(err.Error(), "request body "+want) {
			t.Errorf("body of %d bytes shorter than its length: %v", n, err)
		}
	}
	if err := c.call(ctx, "DELETE", "/gone", nil, &rev); err == nil || err.Error() != `not found: no policy rule named "x"` {
		t.Errorf("error answer: %v", err)
	}
	if err := c.call(ctx, "GET", "/teapot", nil, &rev); err == nil || err.Error() != "GET /teapot: 418 I'm a teapot" {
		t.Errorf("error answer without a message: %v", err)
	}
	if err := c.call(ctx, "GET", "/nowhere", nil, &rev); err == nil {
		t.Error("404 of the server's own: no error")
	}
	if err := newAPIClient(filepath.Join(t.TempDir(), "none.sock")).call(ctx, "GET", "/small", nil, &rev); err == nil || !strings.Contains(err.Error(), "reach the daemon") {
		t.Errorf("no daemon: %v", err)
	}
}

// TestClientStreamsUntilCancelled: a streamed answer (membrane monitor)
// comes line by line as the server flushes, and ends when the context is
// cancelled.
func TestClientStreamsUntilCancelled(t *testing.T) {
	sent := make(chan struct{})
	sock := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for i := 0; ; i++ {
			if _, err := fmt.Fprintf(w, "{\"n\":%d}\n", i); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			if i == 2 {
				close(sent)
			}
			select {
			case <-r.Context().Done():
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}))
	ctx, cancel := context.WithCancel(context.Background())
	rc, err := newAPIClient(sock).do(ctx, "GET", "/v1/monitor", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	<-sent
	var lines []string
	err = streamLines(rc, func(line []byte) error {
		lines = append(lines, string(line))
		if len(lines) == 3 {
			cancel()
		}
		return nil
	})
	if len(lines) < 3 || lines[0] != `{"n":0}` || lines[2] != `{"n":2}` {
		t.Errorf("streamed %q (%v)", lines, err)
	}
	if err == nil {
		t.Error("the stream ended without an error after the cancellation")
	}
}

// TestClientRefusesMalformedAnswers: what is not the HTTP the daemon
// speaks is an error, never a hang or a panic.
func TestClientRefusesMalformedAnswers(t *testing.T) {
	for _, answer := range []string{
		"",
		"garbage\r\n\r\n",
		"HTTP/1.1 2\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
		"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}XX0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{}",
		"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}",
		"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\n{}",
		"HTTP/1.1 200OK\r\nContent-Length: 2\r\n\r\n{}",
		"HTTP/1.1 +20 OK\r\nContent-Length: 2\r\n\r\n{}",
		"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\n{}",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+2\r\n{}\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\n" + strings.Repeat("X: y\r\n", maxHeaderLines+1) + "\r\n{}",
	} {
		rc, err := newAPIClient(serveRaw(t, answer)).do(context.Background(), "GET", "/", nil)
		if err == nil {
			var b []byte
			b, err = io.ReadAll(rc)
			rc.Close()
			if err == nil {
				t.Errorf("answer %q: no error, body %q", answer, b)
			}
		}
	}
	// And what it does speak, framed every way.
	for _, answer := range []string{
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"a\":\"b\"}\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\n{\"a\"\r\n5\r\n:\"b\"}\r\n0\r\nTrailer: x\r\n\r\n",
		"HTTP/1.1 200 OK\nConnection: close\n\n{\"a\":\"b\"}",
	} {
		var v map[string]string
		if err := newAPIClient(serveRaw(t, answer)).call(context.Background(), "GET", "/", nil, &v); err != nil || v["a"] != "b" {
			t.Errorf("answer %q: %v, %v", answer, v, err)
		}
	}
}

// TestClientReadsAnAnswerSentBeforeTheBodyWasRead: the daemon refuses a
// body over its limit (a policy over 64 MiB) before reading it all, and
// closes the connection: the user sees its answer, not a broken pipe.
func TestClientReadsAnAnswerSentBeforeTheBodyWasRead(t *testing.T) {
	const limit = 1 << 20
	sock := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit)); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(map[string]string{"Err": "read policy: " + err.Error()})
			return
		}
		io.WriteString(w, "{}")
	}))
	for _, size := range []int{2 * limit, 16 * limit} {
		err := newAPIClient(sock).call(context.Background(), "PUT", "/v1/policy", bytesBody(make([]byte, size)), nil)
		if err == nil || !strings.Contains(err.Error(), "request body too large") {
			t.Errorf("a %d-byte body against a %d-byte limit: error %v, want the server's answer", size, limit, err)
		}
	}
}
