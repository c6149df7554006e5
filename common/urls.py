"""URLs that carry a password (the replay's ``redis://:PASSWORD@host:port/db``): shown and saved without it.

    redact("redis://:s3cret@10.0.0.5:6390/0")   -> "redis://:***@10.0.0.5:6390/0"
    redact(":s3cret@10.0.0.5:6390")             -> ":***@10.0.0.5:6390"   (no scheme: still masked)

Whatever the form (with or without a scheme, a user name, an unescaped ``@`` or ``/`` in the
password), everything between the scheme and the last ``@`` before the host is user info, and
its password part never leaves this function.
"""

from __future__ import annotations

import re

MASK = "***"
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def redact(url: str) -> str:
    """``url`` with its password (or, with no ``user:`` part, its whole user info) replaced by ``***``."""
    if not isinstance(url, str) or "@" not in url:
        return url
    match = _SCHEME.match(url)
    scheme, rest = (match.group(0), url[match.end():]) if match else ("", url)
    # The host part cannot hold '@'; a password may (unescaped), so the user info ends at the last '@'.
    userinfo, _, host = rest.rpartition("@")
    user, sep, _password = userinfo.partition(":")
    masked = f"{user}:{MASK}" if sep else MASK
    return f"{scheme}{masked}@{host}"


def has_password(url: str) -> bool:
    """Whether ``url`` carries user info that :func:`redact` would mask."""
    return redact(url) != url


def is_redacted(url: str) -> bool:
    """Whether ``url`` is a redacted form (its password replaced by ``***``)."""
    return isinstance(url, str) and redact(url) == url and f"{MASK}@" in url
