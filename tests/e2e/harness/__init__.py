"""The e2e harness for ebb (Python 3.11 stdlib only), one job a module. It drives the real binary,
as STYLE.md asks; nothing in it sleeps in place of a condition.

- `wait`: deadlines (`dl`, stretched under sanitizers), `wait_until`, `wait_stable`, the errors.
- `config`: the default test config, `deep_merge`, `to_yaml`, `SHORT` durations, `rewrite_config`.
- `ebb`: one ebb process (`Ebb`): start on port 0, log lines, signals, exit, memory, stop by pid;
  `run_cli` for its commands (`drain`, `--check-config`).
- `lifecycle`: `wait_ready`, `wait_exit` / `exit_timed`, `assert_lifecycle_once`, `log_time`.
- `blocked_ebb`: an ebb frozen in the write(2) of its first log line.
- `http`: HTTP/1 message bytes (`build_request`, `build_response`, `chunked_body`) and fields.
- `data`: the big-transfer pattern and `StreamCheck`.
- `upstream_conn`, `upstream`, `handlers`: the scripted fake app, its connections, its handlers.
- `client`: `HttpClient` (raw sockets), `try_connect`, `unused_port`, `non_loopback_ipv4`.
- `admin`, `prometheus`: the admin endpoints and the strict `/metrics` reader.
- `websocket`: RFC 6455 framing, a client through ebb, an echo app.
- `h2raw`: a raw HTTP/2 client that reads every frame (GOAWAY, PING, RST_STREAM, DATA).
- `case`: `EbbTestCase` and `LifecycleCase`, the unittest glue that cleans up and reports, with
  `gate` / `hold` (a request held at the app until the test releases it).

Tests import it as `harness` (their directory, tests/e2e, is first on sys.path); tests/bench
puts tests/e2e on sys.path to do the same.
"""
