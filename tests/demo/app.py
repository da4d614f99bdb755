#!/usr/bin/env python3
"""The app behind ebb in `make run`: a tiny HTTP/1.1 keep-alive server, stdlib only.

  /           a short text naming this process and the request's X-Request-Id and X-Forwarded-For
  /slow?s=N   the same after N seconds (try it, then drain: the answer still arrives)
  /healthz    200 ok
  POST, PUT   echo the request body

Usage: app.py [PORT]   (default 3000, on 127.0.0.1)
"""
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

MAX_SLOW_SECONDS = 300


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so ebb's upstream pool has something to reuse
    server_version = "ebb-demo-app"

    def send(self, code, body, content_type="text/plain; charset=utf-8"):
        data = body if isinstance(body, bytes) else body.encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))  # on every answer, HEAD included
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def hello(self, extra=""):
        return (
            f"hello from the demo app (pid {os.getpid()}){extra}\n"
            f"X-Request-Id: {self.headers.get('X-Request-Id', '(none)')}\n"
            f"X-Forwarded-For: {self.headers.get('X-Forwarded-For', '(none)')}\n"
        )

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path == "/healthz":
            self.send(200, "ok\n")
        elif url.path == "/slow":
            try:
                seconds = float(parse_qs(url.query).get("s", ["1"])[0])
            except ValueError:
                seconds = -1
            if not 0 <= seconds <= MAX_SLOW_SECONDS:
                self.send(400, f"s must be a number of seconds from 0 to {MAX_SLOW_SECONDS}\n")
                return
            time.sleep(seconds)
            self.send(200, self.hello(f", after {seconds:g}s"))
        elif url.path == "/":
            self.send(200, self.hello())
        else:
            self.send(404, "not found\n")

    do_HEAD = do_GET

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return bytes(body)
                body += self.rfile.read(size)
                self.rfile.readline()  # the CRLF after each chunk
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_POST(self):
        try:
            body = self.read_body()
        except ValueError:
            self.send(400, "bad body framing\n")
            self.close_connection = True
            return
        self.send(200, body, self.headers.get("Content-Type", "application/octet-stream"))

    do_PUT = do_POST

    def log_message(self, fmt, *args):
        sys.stderr.write(f"app | {self.address_string()} {fmt % args}\n")


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True  # a stop must not wait for a /slow sleeper
    sys.stderr.write(f"app | listening on 127.0.0.1:{server.server_address[1]} (pid {os.getpid()})\n")
    sys.stderr.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
