"""A real gRPC app (python3-grpcio, generic handlers with bytes in and out, no protoc) for the gRPC
tests, run as its own process so that a test can kill it mid-stream. `GrpcApp` starts it on port 0
and reads what it prints: its port first, then one line per event ("start Unary", "cancelled
ServerStream", ...), which a test waits on. Needs Debian's /usr/bin/python3 with python3-grpcio.

Methods of test.Svc:
  Unary         echoes its request with trailer x-trailer: yes; "fail:<msg>" aborts with NOT_FOUND,
                <msg> and trailer x-detail; "sleep:<ms>" answers "slept" after that long.
  ServerStream  "<n>:<size>:<delay ms>": n messages of `size` bytes, `delay` apart.
  ClientStream  "<count>:<bytes>:<sha256>" of what it was sent.
  Bidi          echoes each message as it comes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time

APP_PYTHON = "/usr/bin/python3"  # Debian's, where python3-grpcio lives
MAX_MESSAGE = 64 << 20
OPTIONS = [("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE)]


def _serve() -> None:
    from concurrent import futures

    import grpc

    def say(line: str) -> None:
        print(line, flush=True)

    def unary(req: bytes, ctx):
        say("start Unary")
        if req.startswith(b"fail:"):
            ctx.set_trailing_metadata([("x-detail", "details here")])
            ctx.abort(grpc.StatusCode.NOT_FOUND, req[5:].decode())
        if req.startswith(b"sleep:"):
            end = time.monotonic() + int(req[6:]) / 1000
            while time.monotonic() < end:
                if not ctx.is_active():
                    say("cancelled Unary")
                    return b""
                time.sleep(0.01)
            say("done Unary")
            return b"slept"
        ctx.set_trailing_metadata([("x-trailer", "yes")])
        return req

    def server_stream(req: bytes, ctx):
        n, size, delay = (int(x) for x in req.split(b":"))
        say("start ServerStream")
        try:
            for i in range(n):
                if not ctx.is_active():
                    say("cancelled ServerStream")
                    return
                yield bytes([i % 256]) * size
                say(f"sent {i}")
                time.sleep(delay / 1000)
        except GeneratorExit:  # grpcio closes the generator of a call that ended early
            say("cancelled ServerStream")
            raise
        say("done ServerStream")

    def client_stream(it, ctx):
        say("start ClientStream")
        h, count, total = hashlib.sha256(), 0, 0
        for m in it:
            h.update(m)
            count += 1
            total += len(m)
        return f"{count}:{total}:{h.hexdigest()}".encode()

    def bidi(it, ctx):
        say("start Bidi")
        for m in it:
            yield m

    handler = grpc.method_handlers_generic_handler("test.Svc", {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
    })
    server = grpc.server(futures.ThreadPoolExecutor(16), options=OPTIONS)
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    say(f"port {port}")
    server.wait_for_termination()


class GrpcApp:
    """The app process; stopped (SIGKILL, by pid) by stop(), which tests register at teardown."""

    def __init__(self):
        self.proc = subprocess.Popen([APP_PYTHON, "-u", __file__], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     stdin=subprocess.DEVNULL, text=True)
        self.lines: list[str] = []
        self._cv = threading.Condition()
        self.port = None
        threading.Thread(target=self._read, daemon=True).start()
        first = self.wait_line(lambda l: l.startswith("port "), 20, "the gRPC app's port")
        self.port = int(first.split()[1])

    def _read(self):
        for line in self.proc.stdout:
            with self._cv:
                self.lines.append(line.strip())
                self._cv.notify_all()
        with self._cv:
            self.lines.append("<exit>")
            self._cv.notify_all()

    def wait_line(self, pred, timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                for line in self.lines:
                    if pred(line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {what}; app said {self.lines[-20:]}")
                self._cv.wait(left)

    def count(self, line: str) -> int:
        with self._cv:
            return sum(1 for l in self.lines if l == line)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def stop(self):
        self.kill()  # the reader thread then sees the end of its output and ends


if __name__ == "__main__":
    sys.exit(_serve())
