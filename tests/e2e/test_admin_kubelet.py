"""Issue 12, the drain hook as real kubelets send it. A kubelet before 1.26 builds the preStop URL
as `http://IP:PORT/` + path, so `/drain?wait=true` arrives as `//drain?wait=true`, and it drops
the hook's httpHeaders, so a bearer token never arrives: ebb folds repeated leading slashes of
every admin path, and takes the token as `?token=` too (same comparison, same loopback rule).
The token is never logged (`token=REDACTED`). Every admin request ebb refuses (403) or does not
know (404, 405, 400) is logged at warn with caller, method and target, and counted
(`ebb_admin_refused_total`, `ebb_admin_unknown_total{code}`)."""

import json
import socket
import unittest

from harness.admin import admin_request, poll_readyz, readyz, scrape
from harness.case import LifecycleCase
from harness.handlers import ok
from harness.wait import dl, wait_until

TOKEN = "s3cret-Token_42"


class KubeletCase(LifecycleCase):
    def assertNoSecret(self, ebb, secret: str):
        """`secret` appears in no line ebb wrote (read after the line that must be there)."""
        leaked = [l for l in ebb.lines if secret in l]
        self.assertEqual(leaked, [], f"{secret!r} was logged")

    def warn_line(self, ebb, msg: str, n: int) -> dict:
        recs = wait_until(lambda: len(ebb.logs(msg)) >= n and ebb.logs(msg), dl(2), f"{n} `{msg}` lines")
        self.assertEqual(len(recs), n, recs)
        rec = recs[-1]
        self.assertEqual(rec.get("level"), "warn", rec)
        return rec

    def unknown(self, ebb, code: int):
        return scrape(ebb).value("ebb_admin_unknown_total", {"code": str(code)})


class Slashes(KubeletCase):
    def test_double_slash_drain_wait_drains(self):
        fake, ebb = self.proxy(ok())
        r = admin_request(ebb, "GET", "//drain?wait=true")
        self.assertEqual(r.status, 200, f"{r!r} {r.body!r}")
        doc = json.loads(r.body)
        self.assertEqual(doc["cut_requests"], 0, doc)
        self.assertEqual(readyz(ebb), (503, "drained"))
        self.assertEqual(ebb.wait_log("drain started", dl(2)).get("trigger"), "admin")
        self.assertEqual(self.unknown(ebb, 404), 0, "the kubelet's //drain is not an unknown path")

    def test_every_admin_path_accepts_repeated_leading_slashes(self):
        fake, ebb = self.proxy(ok())
        self.assertEqual(admin_request(ebb, "GET", "//healthz").status, 200)
        r = admin_request(ebb, "GET", "///readyz")
        self.assertEqual((r.status, r.body.strip()), (200, b"ready"))
        r = admin_request(ebb, "GET", "//metrics")
        self.assertEqual(r.status, 200)
        self.assertIn(b"ebb_admin_unknown_total", r.body)
        # Only leading slashes fold: these are other paths.
        for path in ("/drain//", "/x//drain", "//drain/x"):
            self.assertEbbError(admin_request(ebb, "GET", path), 404, path)
        self.assertEqual(readyz(ebb), (200, "ready"), "no drain started")


class QueryToken(KubeletCase):
    def test_query_token_drains_and_is_never_logged(self):
        fake, ebb = self.proxy(ok(), {"admin": {"drain_token": TOKEN}})
        r = admin_request(ebb, "GET", f"//drain?wait=true&token={TOKEN}")
        self.assertEqual(r.status, 200, f"{r!r} {r.body!r}")
        self.assertEqual(readyz(ebb), (503, "drained"))
        rec = ebb.wait_log("drain requested", dl(2))
        self.assertEqual(rec.get("target"), "//drain?wait=true&token=REDACTED", rec)
        self.assertEqual(scrape(ebb).value("ebb_admin_refused_total"), 0)
        self.assertNoSecret(ebb, TOKEN)

    def test_wrong_or_missing_query_token_is_refused_counted_and_logged_redacted(self):
        fake, ebb = self.proxy(ok(), {"admin": {"drain_token": TOKEN}})
        cases = [("//drain?wait=true", "//drain?wait=true"),
                 ("//drain?wait=true&token=wrong-guess-1", "//drain?wait=true&token=REDACTED"),
                 (f"/drain?token={TOKEN[:-1]}", "/drain?token=REDACTED"),
                 (f"/drain?token={TOKEN}x&wait=true", "/drain?token=REDACTED&wait=true"),
                 ("/drain?token=", "/drain?token=REDACTED"),
                 (f"/drain?xtoken={TOKEN}", f"/drain?xtoken={TOKEN}")]  # not the parameter
        for i, (target, logged) in enumerate(cases[:-1]):
            r = admin_request(ebb, "GET", target)
            self.assertEbbError(r, 403, target)
            self.assertEqual(scrape(ebb).value("ebb_admin_refused_total"), i + 1, target)
            rec = self.warn_line(ebb, "drain refused", i + 1)
            self.assertEqual((rec.get("caller"), rec.get("method"), rec.get("target")),
                             ("127.0.0.1", "GET", logged), rec)
        self.assertNoSecret(ebb, "wrong-guess-1")
        self.assertNoSecret(ebb, TOKEN[:-1])  # covers the token and its near misses
        # Negative control: a parameter that is not `token` carries no token and is not redacted,
        # so the check above can see a value in the log.
        r = admin_request(ebb, "POST", cases[-1][0])
        self.assertEbbError(r, 403, cases[-1][0])
        rec = self.warn_line(ebb, "drain refused", len(cases))
        self.assertEqual((rec.get("method"), rec.get("target")), ("POST", cases[-1][1]), rec)
        self.assertEqual(readyz(ebb), (200, "ready"), "no refusal started a drain")
        # The header form still works beside the query form.
        r = admin_request(ebb, "POST", "/drain", [("Authorization", "Bearer " + TOKEN)])
        self.assertEqual(r.status, 202, r)

    def test_query_token_is_not_a_way_around_the_loopback_rule(self):
        ip = self.non_loopback_ip()
        fake, ebb = self.proxy(ok(), {"admin": {"listen": "0.0.0.0:0"}})
        r = admin_request(ebb, "GET", "//drain?wait=true&token=anything", host=ip)
        self.assertEbbError(r, 403, "no drain_token configured, caller not loopback")
        rec = self.warn_line(ebb, "drain refused", 1)
        self.assertEqual((rec.get("caller"), rec.get("target")), (ip, "//drain?wait=true&token=REDACTED"), rec)
        self.assertEqual(scrape(ebb).value("ebb_admin_refused_total"), 1)

    def test_kubelet_from_the_node_address_with_the_query_token(self):
        ip = self.non_loopback_ip()
        fake, ebb = self.proxy(ok(), {"admin": {"listen": "0.0.0.0:0", "drain_token": TOKEN}})
        r = admin_request(ebb, "GET", f"//drain?wait=true&token={TOKEN}", host=ip)
        self.assertEqual(r.status, 200, f"{r!r} {r.body!r}")
        self.assertEqual(readyz(ebb), (503, "drained"))
        self.assertNoSecret(ebb, TOKEN)


class Unknown(KubeletCase):
    def test_404_405_and_400_are_logged_and_counted(self):
        fake, ebb = self.proxy(ok())
        r = admin_request(ebb, "GET", f"//nope?token={TOKEN}&x=1")
        self.assertEbbError(r, 404, "unknown path")
        rec = self.warn_line(ebb, "unknown admin request", 1)
        self.assertEqual((rec.get("caller"), rec.get("method"), rec.get("target"), rec.get("status")),
                         ("127.0.0.1", "GET", "//nope?token=REDACTED&x=1", 404), rec)
        self.assertNoSecret(ebb, TOKEN)
        self.assertEqual(self.unknown(ebb, 404), 1)
        for method, path in (("POST", "/healthz"), ("PUT", "/drain"), ("GET", "/reload")):
            self.assertEbbError(admin_request(ebb, method, path), 405, f"{method} {path}")
        rec = self.warn_line(ebb, "unknown admin request", 4)
        self.assertEqual((rec.get("method"), rec.get("target"), rec.get("status")), ("GET", "/reload", 405), rec)
        self.assertEqual(self.unknown(ebb, 405), 3)
        # Not HTTP at all.
        with socket.create_connection(("127.0.0.1", ebb.admin_port), timeout=dl(5)) as s:
            s.sendall(b"\x16\x03\x01 definitely not http\r\n\r\n")
            answer = s.recv(4096)
        self.assertTrue(answer.startswith(b"HTTP/1.1 400 "), answer)
        rec = self.warn_line(ebb, "malformed admin request", 1)
        self.assertEqual(rec.get("caller"), "127.0.0.1", rec)
        self.assertEqual(self.unknown(ebb, 400), 1)
        self.assertEqual(self.unknown(ebb, 404), 1, "each kind counted apart")
        self.assertEqual(scrape(ebb).value("ebb_admin_refused_total"), 0, "nothing was a 403")
        self.assertEqual(readyz(ebb), (200, "ready"))

    def test_answered_requests_are_not_warned_about(self):
        # Negative control for the warnings above: probes and scrapes log nothing at warn.
        fake, ebb = self.proxy(ok())
        for path in ("/healthz", "/readyz", "/metrics", "//healthz"):
            self.assertEqual(admin_request(ebb, "GET", path).status, 200, path)
        poll_readyz(ebb, 200, "ready", dl(1))
        self.assertEqual([r for r in ebb.logs() if r.get("level") == "warn"], [])
        ex = scrape(ebb)
        self.assertEqual([ex.value("ebb_admin_unknown_total", {"code": c}) for c in ("400", "404", "405")],
                         [0, 0, 0])


if __name__ == "__main__":
    unittest.main()
