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
