"""write_atomic: readers see the old or the new file, a planted link is replaced, never followed; private_dir."""

import os
import stat

import pytest

from common.fileio import UnsafePathError, private_dir, write_atomic


def leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_write_atomic_writes_bytes_text_and_callables_with_the_mode_asked(tmp_path):
    path = write_atomic(tmp_path / "a.json", '{"x": 1}')
    assert path.read_text() == '{"x": 1}' and stat.S_IMODE(path.stat().st_mode) == 0o644
    write_atomic(path, b"\x00\x01", mode=0o600)
    assert path.read_bytes() == b"\x00\x01" and stat.S_IMODE(path.stat().st_mode) == 0o600
    write_atomic(path, lambda handle: handle.write(b"streamed"))
    assert path.read_bytes() == b"streamed" and leftovers(tmp_path) == []


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing(tmp_path):
    path = write_atomic(tmp_path / "state", b"old")

    def explode(handle):
        handle.write(b"half")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        write_atomic(path, explode)
    assert path.read_bytes() == b"old" and leftovers(tmp_path) == []


def test_a_planted_symlink_is_replaced_and_its_target_untouched(tmp_path):
    target = tmp_path / "victim"
    target.write_bytes(b"precious")
    (tmp_path / "reg.json").symlink_to(target)
    write_atomic(tmp_path / "reg.json", b"ours")
    assert target.read_bytes() == b"precious"
    assert not (tmp_path / "reg.json").is_symlink() and (tmp_path / "reg.json").read_bytes() == b"ours"


def test_private_dir_refuses_what_others_could_touch(tmp_path):
    home = private_dir(tmp_path / "home" / "nested")
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafePathError, match="is a symlink"):
        private_dir(tmp_path / "link")
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(UnsafePathError, match="writable by other users"):
        private_dir(shared)
