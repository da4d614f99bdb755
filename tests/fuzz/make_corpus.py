#!/usr/bin/env python3
"""Writes the seed corpus of each fuzz target (tests/fuzz/corpus/<target>/) from the project's own
test cases: config files and the unit tests' YAML, the k8s manifests and fixtures, the e2e tests'
requests and responses (built with their own helpers), and WebSocket frames from the e2e harness.
Run from anywhere; it replaces the generated seeds and keeps what fuzzing found. File names are
content hashes, so reruns are stable."""
import ast
import hashlib
import os
import re
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "tests", "fuzz", "corpus")
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
sys.dont_write_bytecode = True

from harness.http import build_request, build_response, chunked_body  # noqa: E402
from harness.websocket import ws_frame  # noqa: E402
import test_proxy_malformed  # noqa: E402

# Inputs fuzzing found that once hung ebb: yaml-cpp's LoadAll looped on a ',' at document level.
REGRESSIONS = [b",shutdow draimtn_ieout: [1, 2]", b"{a: 1},", b"- a\n,b"]

METHODS = (b"GET ", b"HEAD ", b"POST ", b"PUT ", b"DELETE ", b"OPTIONS ", b"PATCH ", b"CONNECT ", b"TRACE ")


def read(path):
    with open(path, "rb") as f:
        return f.read()


def write_all(target, items):
    """Replaces the generated seeds (named by hash); the inputs fuzzing found (regression-*,
    found-*) stay."""
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    for name in os.listdir(d):
        if re.fullmatch(r"[0-9a-f]{16}", name):
            os.remove(os.path.join(d, name))
    seen = set()
    for data in items:
        h = hashlib.sha1(data).hexdigest()[:16]
        if h in seen:
            continue
        seen.add(h)
        with open(os.path.join(d, h), "wb") as f:
            f.write(data)
    return len(seen)


def files(*dirs, exts=(".yaml", ".yml", ".json")):
    for d in dirs:
        for base, _, names in sorted(os.walk(os.path.join(ROOT, d))):
            if "node_modules" in base:
                continue
            for n in sorted(names):
                if n.endswith(exts):
                    yield os.path.join(base, n)


def e2e_sources():
    """The e2e tests' Python files and their harness package's, in name order."""
    e2e = os.path.join(ROOT, "tests", "e2e")
    for name in sorted(os.listdir(e2e)):
        path = os.path.join(e2e, name)
        if os.path.isdir(path):
            yield from (os.path.join(path, n) for n in sorted(os.listdir(path)) if n.endswith(".py"))
        elif name.endswith(".py"):
            yield path


def bytes_literals(path):
    """Every bytes constant of a Python file (single literals, not the expressions built of them)."""
    tree = ast.parse(read(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, bytes):
            yield node.value


def config_corpus():
    items = [read(p) for p in files("config")]
    # The unit tests' config texts: their raw strings (R"(...)") and one-line "..." YAML maps.
    src = read(os.path.join(ROOT, "tests", "unit", "test_config.cpp")).decode()
    items += [m.encode() for m in re.findall(r'R"\((.*?)\)"', src, re.S)]
    for lit in re.findall(r'"((?:[^"\\\n]|\\.)*)"', src):
        if ":" in lit and "\\n" in lit:
            try:
                items.append(ast.literal_eval('"' + lit + '"').encode())
            except (SyntaxError, ValueError):
                pass
    # The ConfigMap's ebb.yaml, as ebb reads it from the mount.
    cm = read(os.path.join(ROOT, "deploy", "kubernetes", "configmap.yaml")).decode()
    m = re.search(r"ebb\.yaml: \|\n((?:    .*\n|\n)+)", cm)
    if m:
        items.append("".join(l[4:] + "\n" for l in m.group(1).splitlines()).encode())
    # With EBB_* overrides after a NUL byte (the target's convention).
    items.append(b"listen: 0.0.0.0:8080\n\0EBB_UPSTREAM=127.0.0.1:3001\nEBB_SHUTDOWN_DRAIN_TIMEOUT=5s\n")
    items.append(b"\0EBB_PORT=tcp://10.0.0.1:80\nEBB_SHUTDOWN_DRAIN_TIMOUT=1s\n")
    items += REGRESSIONS
    return items


def k8s_corpus():
    return [read(p) for p in files("deploy", os.path.join("tests", "k8s", "fixtures"))] + REGRESSIONS


def request_corpus():
    reqs = [raw for _, raw, _ in test_proxy_malformed.HEAD_SHAPES]
    reqs += [test_proxy_malformed.CHUNKED_POST + body for _, body in test_proxy_malformed.BODY_SHAPES]
    for path in e2e_sources():
        reqs += [b for b in bytes_literals(path) if b.startswith(METHODS)]
    B = build_request
    reqs += [
        B("GET", "/", [("Host", "a.test")]),
        B("POST", "/p", [("Host", "a.test"), ("Connection", "close, X-Drop"), ("X-Drop", "1")], b"hello"),
        B("GET", "http://b.test:81/x?y", [("Host", "a.test"), ("X-Forwarded-For", "10.0.0.1")]),
        B("GET", "/ws", [("Host", "a.test"), ("Connection", "Upgrade"), ("Upgrade", "websocket"),
                         ("Sec-WebSocket-Version", "13"), ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")]),
        B("PUT", "/c", [("Host", "a.test"), ("Transfer-Encoding", "chunked"), ("TE", "trailers"),
                        ("Keep-Alive", "timeout=5"), ("Expect", "100-continue")],
          chunked_body([b"abc", b"de"], trailers=[("X-T", "1")])),
    ]
    reqs.append(b"GET / HTTP/1.0\r\n\r\n")
    reqs.append(b"\r\nGET /x HTTP/1.2\r\nHost: a\r\nX-Request-Id: r1\r\n\r\nGET /y HTTP/1.1\r\nHost: a\r\n\r\n")
    # The first byte picks where the input is cut in two.
    return [bytes([i * 37 % 256]) + r for i, r in enumerate(reqs)]


def response_corpus():
    resps = []
    for path in e2e_sources():
        resps += [b for b in bytes_literals(path) if b.startswith(b"HTTP/1.")]
    R = build_response
    resps += [
        R(200, b"hello"),
        R(200, b"hello world", framing="chunked", chunk_sizes=[3, 8]),
        R(200, b"chunk ext", framing="chunked", chunk_ext=";a=b"),
        R(200, b"until close", framing="close"),
        R(204, framing="none"),
        R(304, framing="none", headers=[("ETag", '"x"')]),
        R(200, b"head", head_only=True),
        R(200, b"x", headers=[("Connection", "keep-alive, X-Hop"), ("X-Hop", "1"), ("Keep-Alive", "timeout=5"),
                             ("Proxy-Connection", "close"), ("Trailer", "X-T")]),
        R(101, framing="none", headers=[("Connection", "Upgrade"), ("Upgrade", "websocket"),
                                         ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")]),
        R(200, b"old", version="HTTP/1.0", framing="close"),
        R(100, framing="none") + R(200, b"after continue"),
        R(103, framing="none", headers=[("Link", "</s.css>; rel=preload")]) + R(200, b"ok"),
        R(999, b"no"), R(500, b"", reason=""),
    ]
    # Byte 0: the cut; byte 1: the request's shape (HEAD, HTTP/1.0 client, upgrade asked, incomplete).
    return [bytes([i * 37 % 256, i % 16]) + r for i, r in enumerate(resps)]


def websocket_corpus():
    F = ws_frame
    frames = [
        F(0x1, b"hello"), F(0x2, bytes(range(200))), F(0x9, b""), F(0xA, b"pong"),
        F(0x8, b"\x03\xe8"), F(0x1, b"masked", mask=b"\x01\x02\x03\x04"),
        F(0x1, b"frag", fin=False) + F(0x0, b"ment"), F(0x1, b"a") + F(0x9, b"") + F(0x1, b"b" * 300),
    ]
    # Streams cut mid-header and mid-payload, as the tunnel sees them at the drain deadline.
    # Long frames are kept short: the tracker counts declared lengths, it never needs the bytes.
    frames += [F(0x2, b"y" * 1000)[:3], F(0x2, b"z" * 70000)[:300], F(0x1, b"abc")[:4],
               F(0x2, b"w" * 70000, mask=b"\x09\x08\x07\x06")[:40]]
    return [bytes([i * 53 % 256]) + f for i, f in enumerate(frames)]


def main():
    for target, items in (("config", config_corpus()), ("k8s", k8s_corpus()), ("inject", k8s_corpus()), ("request", request_corpus()),
                          ("response", response_corpus()), ("websocket", websocket_corpus())):
        print(f"{target}: {write_all(target, items)} files")


if __name__ == "__main__":
    main()
