"""ebb's config as the tests write it: the defaults every test starts from, merging overrides,
YAML out, the short shutdown durations of the lifecycle tests, and rewriting a running ebb's file
for a SIGHUP.
"""

from __future__ import annotations

import json
import os
import re

DEFAULT_CONFIG = {
    "listen": "127.0.0.1:0",
    "admin": {"listen": "127.0.0.1:0"},
    "readiness": {"upstream_check": "none"},
    "log": {"format": "json", "level": "debug", "access": True},
    "shutdown": {"propagation_delay": "0s", "quiet_period": "0s", "propagation_max": "0s",
                 "drain_timeout": "2s"},
}


def deep_merge(base: dict, over: dict) -> dict:
    """`over` merged into a copy of `base`; a None value in `over` deletes the key."""
    out = {k: (deep_merge(v, {}) if isinstance(v, dict) else v) for k, v in base.items()}
    for k, v in (over or {}).items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


_PLAIN_SCALAR = re.compile(r"^[A-Za-z0-9_./:-]+$")


def to_yaml(d: dict, indent: int = 0) -> str:
    """Block-style YAML for nested dicts of str/int/bool (enough for ebb's config)."""
    lines = []
    for k, v in d.items():
        pad = " " * indent
        if isinstance(v, dict):
            lines.append(f"{pad}{k}:")
            lines.append(to_yaml(v, indent + 2))
        elif isinstance(v, bool):
            lines.append(f"{pad}{k}: {'true' if v else 'false'}")
        elif isinstance(v, int):
            lines.append(f"{pad}{k}: {v}")
        else:
            s = str(v)
            special = s.lower() in ("true", "false", "yes", "no", "on", "off", "null", "~", "")
            lines.append(f"{pad}{k}: {s if _PLAIN_SCALAR.match(s) and not special else json.dumps(s)}")
    return "\n".join(lines)


def write_config(path: str, config: dict) -> None:
    """Writes `config` as YAML to `path` atomically (a reload never reads half a file)."""
    tmp = path + ".new"
    with open(tmp, "w") as f:
        f.write(to_yaml(config) + "\n")
    os.replace(tmp, path)


def duration_seconds(d) -> float:
    """A config duration ("300ms", "2s", "1m") in seconds; 2.0 (the drain default) if unreadable."""
    m = re.fullmatch(r"(\d+)(ms|s|m)", str(d))
    if not m:
        return 2.0
    n = int(m.group(1))
    return {"ms": n / 1000, "s": n, "m": n * 60}[m.group(2)]


# Short durations: propagation at least 1s, then until 300ms without a new connection, at most
# 2.5s; the drain phase at most 1.5s.
PROPAGATION_DELAY = 1.0
QUIET_PERIOD = 0.3
PROPAGATION_MAX = 2.5
DRAIN_TIMEOUT = 1.5


def shutdown_config(delay: float, quiet: float, pmax: float, drain: float) -> dict:
    ms = lambda s: f"{int(round(s * 1000))}ms"
    return {"shutdown": {"propagation_delay": ms(delay), "quiet_period": ms(quiet),
                         "propagation_max": ms(pmax), "drain_timeout": ms(drain)}}


SHORT = shutdown_config(PROPAGATION_DELAY, QUIET_PERIOD, PROPAGATION_MAX, DRAIN_TIMEOUT)


def rewrite_config(ebb, over: dict) -> None:
    """Rewrites a running ebb's config file with `over` merged in (for a SIGHUP)."""
    ebb.config = deep_merge(ebb.config, over)
    write_config(ebb.config_path, ebb.config)
