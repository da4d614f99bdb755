"""The rolling-deploy proof's gRPC app: a Python grpcio server in cleartext HTTP/2 (h2c, as
in-cluster gRPC runs) with generic handlers, bytes in and out, no generated code. Naive like the
seed's Go app: no signal handling, so SIGTERM ends it at once, cutting every RPC it serves.

  /zd.Echo/Unary   request b"<ms>\n<payload>": sleeps ms, answers the payload
  /zd.Echo/Stream  request b"<count> <interval ms>": streams b"<i> <count>" count times, the
                   interval apart (several seconds in all)

Run with Debian's /usr/bin/python3 (python3-grpcio): app -addr 127.0.0.1:0; prints `listening
127.0.0.1:PORT` once it serves, like the Go apps. Unlike the e2e tests' gRPC app
(tests/e2e/harness/grpc_app.py, a line per call for a test to wait on), it prints nothing per
call: it runs under load for minutes."""

import argparse
import time
from concurrent import futures

import grpc

SERVICE = "zd.Echo"


def _raw(b):
    return b


def unary(request, context):
    head, _, payload = request.partition(b"\n")
    time.sleep(int(head) / 1000.0)
    return payload


def stream(request, context):
    count, interval_ms = (int(x) for x in request.split())
    for i in range(count):
        if i:
            time.sleep(interval_ms / 1000.0)
        yield f"{i} {count}".encode()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-addr", default="127.0.0.1:0")
    args = ap.parse_args()
    # A thread per RPC in flight: the load keeps a few dozen unary calls and streams open per pod.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=128),
                         options=[("grpc.so_reuseport", 0)])
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary, request_deserializer=_raw,
                                                     response_serializer=_raw),
        "Stream": grpc.unary_stream_rpc_method_handler(stream, request_deserializer=_raw,
                                                       response_serializer=_raw),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port(args.addr)
    if not port:
        raise SystemExit(f"cannot listen on {args.addr}")
    server.start()
    host = args.addr.rsplit(":", 1)[0]
    print(f"listening {host}:{port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
