"""A scripted HTTP/2 app (h2c, prior knowledge) on python3-h2, for the tests where the app's frames
are the point: it records every connection and request (the fields as they arrived), answers each
request with a handler, and can advertise a low SETTINGS_MAX_CONCURRENT_STREAMS or send GOAWAY
with a chosen last-stream-id on its first connection. One thread per connection; stop() closes
everything it opened."""

from __future__ import annotations

import socket
import threading

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings


class Request:
    def __init__(self, conn_no: int, stream: int, headers):
        self.conn_no, self.stream = conn_no, stream
        self.headers = [(k, v) for k, v in headers]
        self.body = b""

    def header(self, name: str):
        for k, v in self.headers:
            if k == name:
                return v
        return None


def default_answer(req: Request):
    """(status, headers, body, trailers); a handler that returns None leaves the stream open, one
    that returns "refuse" resets it with REFUSED_STREAM."""
    return 200, [("content-type", "text/plain")], b"from h2 app: " + req.body, [("x-app-trailer", "done")]


class H2App:
    def __init__(self, handler=default_answer, *, max_streams: int | None = None,
                 goaway_after: int | None = None, goaway_last: int = 0, answer_upto: int | None = None):
        """goaway_after=N: on the first connection, once N requests have arrived, answer those up
        to stream `answer_upto` (default: `goaway_last`), send GOAWAY(goaway_last) and close the
        connection, leaving the others unanswered."""
        self.handler = handler
        self.max_streams = max_streams
        self.goaway_after, self.goaway_last = goaway_after, goaway_last
        self.answer_upto = goaway_last if answer_upto is None else answer_upto
        self.requests: list[Request] = []
        self.connections = 0
        self.max_open_seen = 0  # the most streams open at once on one connection
        self.errors: list[str] = []
        self.resets: list[tuple] = []  # (connection, stream, error code) of RST_STREAMs from ebb
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self._stopped:
            try:
                s, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                no = self.connections
                self._socks.append(s)
            threading.Thread(target=self._serve, args=(s, no), daemon=True).start()

    def _serve(self, sock: socket.socket, no: int):
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        conn.initiate_connection()
        if self.max_streams is not None:
            conn.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.max_streams})
        sock.sendall(conn.data_to_send())
        pending: dict[int, Request] = {}
        ended: list[Request] = []
        open_streams: set[int] = set()
        gone_away = False
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        pending[ev.stream_id] = Request(no, ev.stream_id, ev.headers)
                        open_streams.add(ev.stream_id)
                        with self._lock:
                            self.max_open_seen = max(self.max_open_seen, len(open_streams))
                    elif isinstance(ev, h2.events.DataReceived):
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                        if ev.stream_id in pending:
                            pending[ev.stream_id].body += ev.data
                    elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id in pending:
                        req = pending.pop(ev.stream_id)
                        with self._lock:
                            self.requests.append(req)
                        ended.append(req)
                    elif isinstance(ev, h2.events.StreamReset):
                        with self._lock:
                            self.resets.append((no, ev.stream_id, int(ev.error_code)))
                        open_streams.discard(ev.stream_id)
                        pending.pop(ev.stream_id, None)
                if no == 1 and self.goaway_after is not None and not gone_away:
                    if len(ended) < self.goaway_after:
                        sock.sendall(conn.data_to_send())
                        continue
                    gone_away = True
                    for req in [r for r in ended if r.stream <= self.answer_upto]:
                        self._answer(conn, req)
                        open_streams.discard(req.stream)
                    conn.close_connection(error_code=0, last_stream_id=self.goaway_last)
                    sock.sendall(conn.data_to_send())
                    sock.shutdown(socket.SHUT_WR)
                    while sock.recv(65536):  # until ebb closes its side
                        pass
                    return
                elif not gone_away:
                    for req in ended:
                        self._answer(conn, req)
                        open_streams.discard(req.stream)
                    ended.clear()
                sock.sendall(conn.data_to_send())
        except (OSError, h2.exceptions.ProtocolError) as e:
            if not self._stopped and not isinstance(e, ConnectionResetError):
                self.errors.append(f"connection {no}: {e!r}")

    def _answer(self, conn, req: Request):
        answer = self.handler(req)
        if answer is None:
            return
        if answer == "refuse":
            conn.reset_stream(req.stream, error_code=7)
            return
        status, headers, body, trailers = answer
        conn.send_headers(req.stream, [(":status", str(status))] + list(headers), end_stream=not body and not trailers)
        if body:
            conn.send_data(req.stream, body, end_stream=not trailers)
        if trailers:
            conn.send_headers(req.stream, trailers, end_stream=True)

    def stop(self):
        self._stopped = True
        self.listener.close()
        with self._lock:
            for s in self._socks:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
