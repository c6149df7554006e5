"""Replay URLs are shown and saved without their password, whatever their form."""

import pytest

from common.urls import has_password, is_redacted, redact


@pytest.mark.parametrize("url, shown", [
    ("redis://:s3cret@10.0.0.5:6390/0", "redis://:***@10.0.0.5:6390/0"),
    ("redis://orrery:s3cret@10.0.0.5:6390/0", "redis://orrery:***@10.0.0.5:6390/0"),
    ("rediss://:s3c@r/et@host:6390/0", "rediss://:***@host:6390/0"),  # '@' and '/' unescaped in the password
    (":s3cret@10.0.0.5:6390", ":***@10.0.0.5:6390"),  # no scheme at all
    ("s3cret@10.0.0.5:6390", "***@10.0.0.5:6390"),  # bare user info: all of it may be a password
    ("unix://:s3cret@/run/redis.sock?db=0", "unix://:***@/run/redis.sock?db=0"),
    # redis-py's unix:// form (what EmbeddedRedis.unix_url gives): the password is a query parameter
    ("unix:///run/redis.sock?db=0&password=s3cret", "unix:///run/redis.sock?db=0&password=***"),
    ("unix:///run/redis.sock?password=s3cret&db=0", "unix:///run/redis.sock?password=***&db=0"),
    ("unix:///run/redis.sock?password=s3c&ret&db=0", "unix:///run/redis.sock?password=***&db=0"),  # raw '&'
    ("unix:///run/redis.sock?db=0&password=s3c#ret", "unix:///run/redis.sock?db=0&password=***"),  # raw '#'
    ("unix:///run/redis.sock?db=0&Password=s3cret", "unix:///run/redis.sock?db=0&Password=***"),
    ("unix:///run/redis.sock?password=s3c@ret", "unix://***"),  # raw '@': masked as user info too (more, never less)
    ("unix://orrery:s3cret@/run/redis.sock?db=1", "unix://orrery:***@/run/redis.sock?db=1"),
    ("redis://10.0.0.5:6390/0?password=s3cret", "redis://10.0.0.5:6390/0?password=***"),
    ("redis://:s3cret@10.0.0.5:6390/0?password=s3cret", "redis://:***@10.0.0.5:6390/0?password=***"),
    ("unix:///run/redis.sock?db=0", "unix:///run/redis.sock?db=0"),
    ("redis://10.0.0.5:6390/0", "redis://10.0.0.5:6390/0"),
    ("", ""),
])
def test_redact_masks_every_form_of_password(url, shown):
    assert redact(url) == shown
    assert "s3c" not in redact(url)
    assert redact(redact(url)) == redact(url), "idempotent"


def test_redacted_forms_are_recognised():
    assert has_password("redis://:pw@h:1/0") and not has_password("redis://h:1/0")
    assert is_redacted("redis://:***@h:1/0") and not is_redacted("redis://:pw@h:1/0")
    assert not is_redacted("redis://h:1/0") and not has_password(redact("redis://:pw@h:1/0"))
    unix = "unix:///run/redis.sock?db=0&password=pw"
    assert has_password(unix) and not is_redacted(unix) and is_redacted(redact(unix))
    assert not has_password("unix:///run/redis.sock?db=0") and not has_password("unix:///run/redis.sock?password=")
    assert not is_redacted("unix:///run/redis.sock?db=0")


def test_embedded_unix_url_round_trips_and_is_masked():
    """The URL an embedded server gives the learner parses back (redis-py and replay.Address) and redacts."""
    from redis.connection import parse_url

    from replay.server import Address

    password = "Zx_9-qq/a@b&c%d+e"  # every character a URL might trip on
    url = Address(path="/tmp/orrery-redis-0/run dir/redis.sock", password=password, db=0).url
    assert url.startswith("unix:///tmp/orrery-redis-0/run%20dir/redis.sock?db=0&password=")
    assert parse_url(url)["password"] == password and parse_url(url)["path"] == "/tmp/orrery-redis-0/run dir/redis.sock"
    parsed = Address.from_url(url)
    assert (parsed.path, parsed.password, parsed.db) == ("/tmp/orrery-redis-0/run dir/redis.sock", password, 0)
    assert redact(url) == "unix:///tmp/orrery-redis-0/run%20dir/redis.sock?db=0&password=***"
    with_user = Address(path="/r.sock", password=password, username="orrery", db=2).url
    parsed = Address.from_url(with_user)
    assert (parsed.path, parsed.password, parsed.username, parsed.db) == ("/r.sock", password, "orrery", 2)
    assert "Zx" not in redact(with_user) and "Zx" not in redact(url)
