"""A strict reader of the Prometheus text format 0.0.4: it fails on any line that does not parse,
on HELP/TYPE after a family's samples, on interleaved families, on duplicate samples, and on a
histogram whose buckets are not cumulative. `Exposition.value` looks a sample up.
"""

from __future__ import annotations

import math
import re

from harness.wait import HarnessError

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE_RE = re.compile(rf"^({_NAME})(?:\{{(.*)\}})?[ \t]+(\S+)(?:[ \t]+(-?\d+))?$")
_LABEL_RE = re.compile(r'[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"((?:[^"\\\n]|\\[\\"n])*)"[ \t]*')
_TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


class Exposition:
    def __init__(self):
        self.families: dict = {}  # name -> {"type", "help", "samples": [(name, labels, value)]}
        self.samples: list = []   # (name, labels, value) in order

    def value(self, name: str, labels: dict | None = None):
        """The value of the sample `name` whose labels include `labels`; None if absent;
        raises if several match."""
        hits = [v for n, l, v in self.samples
                if n == name and all(l.get(k) == str(x) for k, x in (labels or {}).items())]
        if len(hits) > 1:
            raise HarnessError(f"{len(hits)} samples match {name}{labels}")
        return hits[0] if hits else None

    def labelled(self, name: str) -> list:
        return [(l, v) for n, l, v in self.samples if n == name]


def _parse_labels(s: str, where: str) -> dict:
    out = {}
    pos = 0
    while pos < len(s):
        m = _LABEL_RE.match(s, pos)
        if not m:
            raise AssertionError(f"{where}: bad label set {{{s}}} at offset {pos}")
        if m.group(1) in out:
            raise AssertionError(f"{where}: label {m.group(1)} twice")
        out[m.group(1)] = m.group(2).replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
        pos = m.end()
        if pos < len(s):
            if s[pos] != ",":
                raise AssertionError(f"{where}: expected ',' between labels in {{{s}}}")
            pos += 1
    return out


def _parse_value(s: str, where: str) -> float:
    if s in ("+Inf", "Inf"):
        return math.inf
    if s == "-Inf":
        return -math.inf
    if s == "NaN":
        return math.nan
    if not re.fullmatch(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?", s):
        raise AssertionError(f"{where}: value {s!r} is not a float")
    return float(s)


def _family_of(name: str, families: dict) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix):
            base = name[:-len(suffix)]
            if families.get(base, {}).get("type") in ("histogram", "summary"):
                return base
    return name


def parse_prometheus(text: str) -> Exposition:
    """Parses and validates; raises AssertionError naming the line on any violation."""
    if text and not text.endswith("\n"):
        raise AssertionError("exposition does not end with a newline")
    ex = Exposition()
    fams = ex.families
    closed = set()      # families whose group of lines has ended
    current = None
    seen = set()
    for no, line in enumerate(text.split("\n")[:-1], 1):
        where = f"line {no} {line!r}"
        if line.strip() == "":
            continue
        if line.startswith("#"):
            m = re.match(r"^#[ \t]+(HELP|TYPE)[ \t]+(\S+)(?:[ \t]+(.*))?$", line)
            if not m:
                continue  # a plain comment
            kind, name, rest = m.group(1), m.group(2), m.group(3) or ""
            if not re.fullmatch(_NAME, name):
                raise AssertionError(f"{where}: bad metric name")
            fam = fams.setdefault(name, {"type": None, "help": None, "samples": []})
            if fam["samples"]:
                raise AssertionError(f"{where}: {kind} after samples of {name}")
            if name in closed or (current is not None and current != name and name in fams
                                  and fams[name]["samples"]):
                raise AssertionError(f"{where}: {name} appears in two groups")
            if current is not None and current != name:
                closed.add(current)
            current = name
            key = kind.lower()
            if fam[key] is not None:
                raise AssertionError(f"{where}: second {kind} for {name}")
            if kind == "TYPE":
                if rest.strip() not in _TYPES:
                    raise AssertionError(f"{where}: unknown type {rest!r}")
                fam["type"] = rest.strip()
            else:
                fam["help"] = rest
            continue
        m = _SAMPLE_RE.match(line)
        if not m:
            raise AssertionError(f"{where}: not a sample line")
        name, lab, val = m.group(1), m.group(2), m.group(3)
        labels = _parse_labels(lab, where) if lab else {}
        value = _parse_value(val, where)
        famname = _family_of(name, fams)
        fam = fams.get(famname)
        if fam is None or fam["type"] is None:
            raise AssertionError(f"{where}: sample of {famname} before its # TYPE line")
        if famname in closed:
            raise AssertionError(f"{where}: {famname} appears in two groups")
        if current != famname:
            if current is not None:
                closed.add(current)
            current = famname
        key = (name, tuple(sorted(labels.items())))
        if key in seen:
            raise AssertionError(f"{where}: duplicate sample")
        seen.add(key)
        if fam["type"] == "counter" and not value >= 0:
            raise AssertionError(f"{where}: a counter must be >= 0")
        fam["samples"].append((name, labels, value))
        ex.samples.append((name, labels, value))
    for famname, fam in fams.items():
        if fam["type"] is not None and not fam["samples"]:
            raise AssertionError(f"family {famname} has HELP/TYPE but no sample")
        if fam["type"] == "histogram":
            _check_histogram(famname, fam["samples"])
    return ex


def _check_histogram(name: str, samples: list):
    groups: dict = {}
    for n, labels, v in samples:
        rest = tuple(sorted((k, x) for k, x in labels.items() if k != "le"))
        g = groups.setdefault(rest, {"buckets": [], "sum": None, "count": None})
        if n == name + "_bucket":
            if "le" not in labels:
                raise AssertionError(f"{name}_bucket without le: {labels}")
            g["buckets"].append((_parse_value(labels["le"], f"{name} le"), v))
        elif n == name + "_sum":
            g["sum"] = v
        elif n == name + "_count":
            g["count"] = v
        else:
            raise AssertionError(f"histogram {name} has a sample named {n}")
    for rest, g in groups.items():
        b = g["buckets"]
        if not b or b[-1][0] != math.inf:
            raise AssertionError(f"histogram {name}{rest}: the last bucket must be le=\"+Inf\"")
        if [x for x, _ in b] != sorted(x for x, _ in b):
            raise AssertionError(f"histogram {name}{rest}: buckets not in increasing le order")
        counts = [c for _, c in b]
        if counts != sorted(counts):
            raise AssertionError(f"histogram {name}{rest}: bucket counts not cumulative: {b}")
        if g["count"] is None or g["sum"] is None:
            raise AssertionError(f"histogram {name}{rest}: _sum or _count missing")
        if g["count"] != b[-1][1]:
            raise AssertionError(f"histogram {name}{rest}: _count {g['count']} != +Inf bucket {b[-1][1]}")
