"""URLs that carry a password (the replay's ``redis://:PASSWORD@host:port/db``): shown and saved without it.

    redact("redis://:s3cret@10.0.0.5:6390/0")              -> "redis://:***@10.0.0.5:6390/0"
    redact(":s3cret@10.0.0.5:6390")                        -> ":***@10.0.0.5:6390"   (no scheme: still masked)
    redact("unix:///run/redis.sock?db=0&password=s3cret")  -> "unix:///run/redis.sock?db=0&password=***"

A password can sit in two places, and both are masked. User info: whatever the form (with or
without a scheme, a user name, an unescaped ``@`` or ``/`` in the password), everything between
the scheme and the last ``@`` is user info, and its password part never leaves this function. A
``password=`` query parameter (redis-py's form for ``unix://`` sockets, also accepted in
``redis://`` URLs): its value runs to the next ``&name=`` parameter or the end of the URL, so an
unescaped ``&``, ``#`` or ``@`` in it stays masked. Where the two overlap (a password holding
``?password=`` or ``@``), the union is masked: more than needed, never less.
"""

from __future__ import annotations

import re

MASK = "***"
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_QUERY_PASSWORD = re.compile(r"[?&;]password=(.*?)(?=&[A-Za-z_][A-Za-z0-9_.-]*=|\Z)", re.IGNORECASE | re.DOTALL)


def _secrets(url: str) -> list[tuple[int, int, bool]]:
    """(start, end, always) character spans of ``url`` that hold a password; ``always``: mask even when empty."""
    spans = []
    match = _SCHEME.match(url)
    start = match.end() if match else 0
    at = url.rfind("@", start)
    if at >= 0:  # the host part cannot hold '@'; a password may (unescaped), so the user info ends at the last '@'
        colon = url.find(":", start, at)
        spans.append((colon + 1 if colon >= 0 else start, at, True))  # no 'user:' part: all of it may be a password
    spans += [(found.start(1), found.end(1), False) for found in _QUERY_PASSWORD.finditer(url)]
    return sorted(spans)


def redact(url: str) -> str:
    """``url`` with its passwords (or, with no ``user:`` part, its whole user info) replaced by ``***``."""
    if not isinstance(url, str):
        return url
    merged: list[list[int]] = []
    for start, end, always in _secrets(url):
        if start == end and not always:
            continue  # an empty password= parameter holds nothing
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    shown, last = [], 0
    for start, end in merged:
        shown += [url[last:start], MASK]
        last = end
    return "".join(shown) + url[last:]


def has_password(url: str) -> bool:
    """Whether ``url`` carries a password (or user info) that :func:`redact` would mask."""
    return redact(url) != url


def is_redacted(url: str) -> bool:
    """Whether ``url`` is a redacted form (its password replaced by ``***``)."""
    return isinstance(url, str) and MASK in url and redact(url) == url
