"""The fake app (`FakeUpstream`): a threaded TCP server on 127.0.0.1 that counts accepts, records
every request, and answers through a handler `handler(req, conn) -> None | KEEP | CLOSE` called
right after the request head arrived (so a handler can send `100 Continue` before reading the
body). Keep-alive is understood, so its accept count proves connection reuse; anything ebb sends
it that is not valid HTTP/1.1 lands in `parse_errors`. Handlers live in `harness.handlers`.
"""

from __future__ import annotations

import socket
import threading
import time
import traceback

from harness.handlers import ok
from harness.http import FakeParseError
from harness.upstream_conn import CLOSE, FakeConn, PeerGone, Request, Stopping
from harness.wait import WaitTimeout


class FakeUpstream:
    """A scripted HTTP/1.1 app on 127.0.0.1 (port 0 unless given). See the module doc."""

    def __init__(self, handler=None, *, port: int = 0, on_accept=None, name: str = "app"):
        self.handler = handler or ok()
        self.on_accept = on_accept
        self.name = name
        self._want_port = port
        self.conns: list[FakeConn] = []
        self.requests: list[Request] = []
        self.parse_errors: list[str] = []
        self.handler_errors: list[str] = []
        self._cv = threading.Condition()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lsock: socket.socket | None = None
        self.port: int | None = None

    def start(self) -> "FakeUpstream":
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self._want_port))
        s.listen(128)
        s.settimeout(0.2)  # the accept loop also checks _stopping this often
        self._lsock = s
        self.port = s.getsockname()[1]
        t = threading.Thread(target=self._accept_loop, daemon=True, name=f"{self.name}-accept")
        t.start()
        self._threads.append(t)
        return self

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _notify(self):
        with self._cv:
            self._cv.notify_all()

    def _accept_loop(self):
        while not self._stopping.is_set():
            try:
                s, _ = self._lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            s.settimeout(None)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._cv:
                conn = FakeConn(self, s, len(self.conns))
                self.conns.append(conn)
                self._cv.notify_all()
                if self._stopping.is_set():
                    conn.close()
                    break
                t = threading.Thread(target=self._serve, args=(conn,), daemon=True,
                                     name=f"{self.name}-conn{conn.index}")
                self._threads.append(t)
            t.start()

    def _serve(self, conn: FakeConn):
        try:
            if self.on_accept is not None and self.on_accept(conn) == CLOSE:
                return
            while not self._stopping.is_set():
                req = conn.read_request()
                if req is None:
                    return
                result = self.handler(req, conn)
                if result == CLOSE or conn.closed:
                    return
                req.read_body()
                if req.wants_close:
                    return
        except (PeerGone, Stopping):
            pass
        except FakeParseError as e:
            with self._cv:
                self.parse_errors.append(f"conn {conn.index}: {e}")
                self._cv.notify_all()
        except OSError as e:
            if not self._stopping.is_set():
                conn._mark_peer_gone(f"os error: {e}")
        except Exception:
            with self._cv:
                self.handler_errors.append(f"conn {conn.index}: {traceback.format_exc()}")
                self._cv.notify_all()
        finally:
            conn.close()
            self._notify()

    def stop(self) -> None:
        """Closes the listener and every connection, and joins every thread."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._lsock is not None:
            try:
                self._lsock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._lsock.close()
        with self._cv:
            conns = list(self.conns)
            threads = list(self._threads)
            self._cv.notify_all()
        for c in conns:
            c._shutdown()
        for t in threads:
            if t is not threading.current_thread():
                t.join(timeout=5)
        for c in conns:
            c.close()
        stuck = [t.name for t in threads if t.is_alive()]
        if stuck:
            self.handler_errors.append(f"threads still running after stop: {stuck}")

    # -- observations ------------------------------------------------------------------------
    @property
    def accepts(self) -> int:
        with self._cv:
            return len(self.conns)

    def wait_for(self, pred, timeout: float, what: str):
        """Waits (on the fake's condition variable) until pred() is truthy; returns it."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                v = pred()
                if v:
                    return v
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeout(f"timed out after {timeout:.2f}s waiting for {what}; "
                                      f"app state: {self.summary()}")
                self._cv.wait(min(left, 0.05))

    def wait_requests(self, n: int, timeout: float = 5.0) -> list:
        return self.wait_for(lambda: len(self.requests) >= n and self.requests[:n],
                             timeout, f"{n} request(s) at the app")

    def wait_conn_closed(self, index: int, timeout: float) -> FakeConn:
        """Waits until ebb closed (EOF/reset/write error) fake connection `index`."""
        return self.wait_for(lambda: len(self.conns) > index and self.conns[index].peer_closed
                             and self.conns[index], timeout, f"ebb to close app connection {index}")

    def total_bytes_received(self) -> int:
        with self._cv:
            return sum(c.bytes_received for c in self.conns)

    def bytes_sent_total(self) -> int:
        with self._cv:
            return sum(c.bytes_sent for c in self.conns)

    def raw_received(self) -> bytes:
        """Everything every connection received, concatenated in accept order (capped)."""
        with self._cv:
            return b"".join(bytes(c.raw) for c in self.conns)

    def summary(self) -> str:
        with self._cv:
            out = [f"accepts={len(self.conns)}"]
            for c in self.conns:
                out.append(f"  {c!r} first bytes: {bytes(c.raw[:160])!r}")
            for r in self.requests[-30:]:
                out.append(f"  {r!r}")
            for e in self.parse_errors:
                out.append(f"  PARSE ERROR {e}")
            for e in self.handler_errors:
                out.append(f"  HANDLER ERROR {e}")
            return "\n".join(out)
