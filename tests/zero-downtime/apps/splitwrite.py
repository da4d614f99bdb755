"""An app as most frameworks behave, for the rolling-deploy proof: Python's http.server (threads,
HTTP/1.1 keep-alive, no TCP_NODELAY), which writes a response's head and its body in separate
writes, so the body may wait on Nagle's algorithm and the peer's delayed ACK (about 40 ms). It
answers in 1-200 ms, streams chunked responses, takes uploads of a few MiB, and now and then ends
a keep-alive connection itself (a response with `Connection: close`, then a close). No signal
handling: SIGTERM ends it at once, like the naive Go app.

  GET /            "ok\\n" after 1-200 ms
  POST /echo       the body back (Content-Length or chunked request bodies)
  GET /slow?ms=N   "slept N\\n" after N ms
  GET /stream?n=K  K chunks of "chunk i\\n", 1-20 ms apart, Transfer-Encoding: chunked
"""

import argparse
import random
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

CLOSE_ONE_IN = 20  # about one response in CLOSE_ONE_IN ends its keep-alive connection


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    _rng = random.Random()
    _lock = threading.Lock()

    def log_message(self, fmt, *args):  # no access log: the harness counts requests itself
        pass

    def _chance(self, n):
        with self._lock:
            return self._rng.randrange(n) == 0

    def _uniform(self, a, b):
        with self._lock:
            return self._rng.uniform(a, b)

    def _head(self, length=None, chunked=False):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(length))
        if self._chance(CLOSE_ONE_IN):
            self.send_header("Connection", "close")  # the app ends this connection itself
            self.close_connection = True
        self.end_headers()  # one write for the head; the body follows in its own write(s)

    def _body(self, data):
        self.wfile.write(data)

    def do_GET(self):
        u = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        if u.path == "/slow":
            ms = int(q.get("ms", "0"))
            time.sleep(ms / 1000)  # the app's work: its duration is the behaviour under test
            body = f"slept {ms}\n".encode()
            self._head(len(body))
            self._body(body)
        elif u.path == "/stream":
            n = int(q.get("n", "5"))
            self._head(chunked=True)
            for i in range(n):
                time.sleep(self._uniform(0.001, 0.02))  # a response produced piece by piece
                part = f"chunk {i}\n".encode()
                self._body(b"%x\r\n%s\r\n" % (len(part), part))
            self._body(b"0\r\n\r\n")
        else:
            time.sleep(self._uniform(0.001, 0.2))
            self._head(3)
            self._body(b"ok\n")

    def do_POST(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                data += self.rfile.read(size)
                self.rfile.readline()
        else:
            data = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        time.sleep(self._uniform(0.001, 0.05))
        self._head(len(data))
        self._body(bytes(data))


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the listen backlog, set before bind


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-addr", default="127.0.0.1:0")
    args = ap.parse_args()
    host, port = args.addr.rsplit(":", 1)
    srv = Server((host, int(port)), Handler)
    print(f"listening {host}:{srv.server_address[1]}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
