"""The emulated Pi's own script (emulated_pi.py): a second build is the cached one, the recipe
names the cache folder, the mirror comes from this machine's apt sources, and a chroot path
sshd would refuse is refused first, with the reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.pi import emulated_pi as builder

SCRIPT = Path(builder.__file__)


def test_a_second_build_is_the_cached_one(emulated_pi):
    start = time.monotonic()
    done = subprocess.run([sys.executable, str(SCRIPT), "build"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"root": str(emulated_pi.root)}
    assert time.monotonic() - start < 30
    status = json.loads(subprocess.run([sys.executable, str(SCRIPT), "status"],
                                       capture_output=True, text=True, check=True).stdout)
    assert status["built"] is True and status["key"] in str(emulated_pi.root)


def test_the_recipe_names_the_cache_folder(monkeypatch):
    key = builder.recipe_key()
    assert builder.root_dir() == builder.CACHE / key / "root"
    changed = dict(builder.RECIPE, include=[*builder.RECIPE["include"], "python3-scipy"])
    monkeypatch.setattr(builder, "RECIPE", changed)
    assert builder.recipe_key() != key


def test_the_mirror_is_the_one_apt_uses_here():
    sources = [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]
    text = "".join(p.read_text() for p in sources if p.is_file())
    if "bookworm" not in text:
        pytest.skip("this machine's apt sources name no Debian bookworm")
    mirror = builder.apt_mirror()
    assert mirror.startswith(("http://", "https://")) and mirror in text


def test_a_chroot_under_a_writable_folder_is_refused(tmp_path):
    folder = tmp_path / "root"
    folder.mkdir()
    os.chmod(tmp_path, 0o777)
    with pytest.raises(builder.Unavailable, match="not group- or world-writable"):
        builder.check_chroot_path(folder)
    with pytest.raises(builder.Unavailable, match="/tmp"):
        builder.check_chroot_path(Path("/tmp"))


def test_tests_wait_for_a_build_in_progress(tmp_path, monkeypatch):
    """CI builds beside the suite: while the build holds its lock the Pi fixture waits (up to
    its limit), then finds the result; without a build running it does not wait at all."""
    import fcntl
    import threading

    monkeypatch.setattr(builder, "CACHE", tmp_path)
    monkeypatch.setattr(builder, "LOCK", tmp_path / ".build.lock")
    assert builder.wait_for_build(30) is False  # no lock file: nothing to wait for

    def finish_build_later(lock):
        time.sleep(1.5)
        ready = tmp_path / builder.recipe_key() / "ready"
        ready.parent.mkdir()
        ready.write_text("done\n")
        fcntl.flock(lock, fcntl.LOCK_UN)

    with open(builder.LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        start = time.monotonic()
        assert builder.wait_for_build(0.5) is False  # held past the limit: give up
        assert 0.5 <= time.monotonic() - start < 3
        threading.Thread(target=finish_build_later, args=(lock,), daemon=True).start()
        start = time.monotonic()
        assert builder.wait_for_build(30) is True
        assert 1.0 <= time.monotonic() - start < 10
    start = time.monotonic()
    assert builder.wait_for_build(30) is True and time.monotonic() - start < 0.5
