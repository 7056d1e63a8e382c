#!/usr/bin/env python3
"""An emulated Raspberry Pi on this machine: a Debian arm64 userland run by qemu-user, reached
over a real sshd on 127.0.0.1, for testing `tflc bench` on the real Pi path without a Pi.

Why this shape: a Pi's benchmark path is aarch64 Python, aarch64 wheels (tflite-runtime 2.14
with numpy 1.24, ai-edge-litert) and an SSH login; qemu-user-static with binfmt_misc runs the
aarch64 binaries of a debootstrapped Debian bookworm directly, and the host's OpenSSH server
with `ChrootDirectory` turns a login as `pi` into a shell inside it. Nothing is mocked: the
runner that tflc copies there is executed by aarch64 CPython, numpy and LiteRT under qemu.

Standard library only, independent of tflc (CI runs it with any Python 3.8+ as root, before the
test suite). Commands:

    python3 tests/pi/emulated_pi.py build   build the userland (cached; idempotent)
    python3 tests/pi/emulated_pi.py up      build, then start its sshd on a loopback port
    python3 tests/pi/emulated_pi.py status  what is built and running (JSON)
    python3 tests/pi/emulated_pi.py down    stop the sshd `up` started

The userland is cached under $TFLC_PI_CACHE (default /var/cache/tflc-emulated-pi), one folder
per recipe hash (`RECIPE` below: suite, packages, wheels and the layout version), so a changed
recipe builds anew and an unchanged one costs nothing. It lives outside /tmp because sshd's
ChrootDirectory demands that every component of the path be root-owned and not writable by
group or others. The Debian mirror is the one this machine's own apt sources name; no host
name is written here.

Inside the userland (all aarch64, Python 3.11):
    /usr/bin/python3                 Debian's python3 with numpy 1.24 and no TFLite runtime
    /opt/tflite-runtime/bin/python   + tflite-runtime 2.14.0 on that numpy 1.24
    /opt/litert/bin/python           ai-edge-litert (its own numpy and dependencies)
    /opt/bare/bin/python             a venv without numpy

Logins: users `pi` and `pi2` (two "devices" of a fleet on the same userland), key-only.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

CACHE = Path(os.environ.get("TFLC_PI_CACHE", "/var/cache/tflc-emulated-pi"))
USERS = ("pi", "pi2")
PYTHONS = {
    "system": "/usr/bin/python3",
    "tflite_runtime": "/opt/tflite-runtime/bin/python",
    "litert": "/opt/litert/bin/python",
    "bare": "/opt/bare/bin/python",
}
# Everything the userland is made from; its hash names the cache folder.
RECIPE = {
    "layout": 1,
    "arch": "arm64",
    "suite": "bookworm",
    "variant": "minbase",
    "include": ["python3", "python3-numpy", "python3-pip", "python3-venv"],
    "python": "3.11",
    "platforms": ["manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_27_aarch64",
                  "manylinux_2_28_aarch64", "manylinux_2_34_aarch64"],
    "venvs": {
        "tflite-runtime": {"system_site_packages": True, "no_deps": True,
                           "packages": ["tflite-runtime==2.14.0"]},
        "litert": {"system_site_packages": False, "no_deps": False,
                   "packages": ["ai-edge-litert==2.3.0"]},
        "bare": {"system_site_packages": False, "no_deps": True, "packages": []},
    },
}
QEMU = "/usr/bin/qemu-aarch64-static"
BINFMT = Path("/proc/sys/fs/binfmt_misc")
# The ELF header of an aarch64 executable and the mask binfmt_misc matches it with (as in
# Debian's qemu-user-static), registered with flag F so the interpreter works inside a chroot.
AARCH64_MAGIC = (r"\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00"
                 r"\xb7\x00")
AARCH64_MASK = (r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff"
                r"\xff\xff")


class Unavailable(Exception):
    """Why the emulated Pi cannot be had here; tests skip with this text."""


def log(message: str) -> None:
    print(f"[emulated-pi] {message}", file=sys.stderr, flush=True)


def run(argv: list, **kwargs) -> subprocess.CompletedProcess:
    """A command that must succeed; its output tail goes into the error."""
    done = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip()[-1500:]
        raise RuntimeError(f"{' '.join(map(str, argv[:6]))} ... failed ({done.returncode}): {tail}")
    return done


# ------------------------------------------------------------------------------ the recipe
def recipe_key() -> str:
    return hashlib.sha256(json.dumps(RECIPE, sort_keys=True).encode()).hexdigest()[:16]


def root_dir() -> Path:
    """The userland's folder for this recipe."""
    return CACHE / recipe_key() / "root"


def is_built() -> bool:
    return (CACHE / recipe_key() / "ready").is_file()


def apt_mirror() -> str:
    """The Debian mirror this machine's apt already uses (deb822 or one-line sources)."""
    texts = []
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        with contextlib.suppress(OSError):
            texts.append(path.read_text())
    for text in texts:
        for stanza in re.split(r"\n\s*\n", text):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.MULTILINE)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.MULTILINE)
            if uris and suites and RECIPE["suite"] in suites.group(1).split():
                return uris.group(1)
        for line in text.splitlines():
            match = re.match(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
            if match and match.group(2) == RECIPE["suite"]:
                return match.group(1)
    raise Unavailable(f"no apt source for Debian {RECIPE['suite']} in /etc/apt: cannot "
                      "choose a mirror for debootstrap")


# ----------------------------------------------------------------------------- preconditions
def require_root() -> None:
    if os.geteuid() != 0:
        raise Unavailable("the emulated Pi needs root (binfmt_misc, debootstrap, chroot, a "
                          "second sshd with ChrootDirectory); CI runs as root")


def require_tools() -> None:
    missing = [tool for tool in ("debootstrap", "chroot") if shutil.which(tool) is None]
    if not Path(QEMU).exists():
        missing.append("qemu-user-static")
    if missing:
        raise Unavailable("missing " + ", ".join(missing) + " (apt-get install debootstrap "
                          "qemu-user-static; .ci/run does this)")


def ensure_binfmt() -> None:
    """binfmt_misc mounted, with an aarch64 handler that works inside a chroot (flag F)."""
    if not (BINFMT / "register").exists():
        try:
            run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)])
        except RuntimeError as exc:
            raise Unavailable(f"cannot mount binfmt_misc: {exc}") from None
    entry = BINFMT / "qemu-aarch64"
    if entry.exists():
        text = entry.read_text()
        if "enabled" in text and re.search(r"^flags:.*F", text, re.MULTILINE):
            return
        entry.write_text("-1")  # a handler without F cannot run inside the chroot: replace it
    line = f":qemu-aarch64:M::{AARCH64_MAGIC}:{AARCH64_MASK}:{QEMU}:F"
    try:
        (BINFMT / "register").write_text(line)
    except OSError as exc:
        raise Unavailable(f"cannot register qemu-aarch64 with binfmt_misc: {exc}") from None


def check_chroot_path(path: Path) -> None:
    """sshd refuses a ChrootDirectory with any component not root-owned or writable by others."""
    for part in [path, *path.parents]:
        info = part.stat()
        if info.st_uid != 0 or info.st_mode & 0o022:
            raise Unavailable(f"{part} must be owned by root and not group- or world-writable "
                              f"for sshd's ChrootDirectory (uid {info.st_uid}, mode "
                              f"{oct(info.st_mode & 0o777)}); set TFLC_PI_CACHE elsewhere")


# ------------------------------------------------------------------------------------ build
def download_wheels(dest: Path) -> None:
    """aarch64 cp311 wheels fetched here: pip inside the userland has no CA to reach PyPI."""
    dest.mkdir(parents=True, exist_ok=True)
    platforms = [arg for tag in RECIPE["platforms"] for arg in ("--platform", tag)]
    for name, venv in RECIPE["venvs"].items():
        if not venv["packages"]:
            continue
        log(f"downloading wheels for {name}: {' '.join(venv['packages'])}")
        run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
             "--only-binary=:all:", "--python-version", RECIPE["python"],
             "--implementation", "cp", *platforms, *(["--no-deps"] if venv["no_deps"] else []),
             "-d", str(dest), *venv["packages"]], timeout=900)


def chroot(root: Path, *argv: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    """Run an aarch64 command inside the userland (through qemu, by binfmt_misc)."""
    binary = shutil.which("chroot") or "/usr/sbin/chroot"
    return run([binary, str(root), *argv], timeout=timeout,
               env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "LANG": "C.UTF-8",
                    "HOME": "/root", "PIP_DISABLE_PIP_VERSION_CHECK": "1"})


def make_venvs(root: Path) -> None:
    """The device Pythons of the module docstring, installed from the downloaded files."""
    for name, venv in RECIPE["venvs"].items():
        path = f"/opt/{name}"
        log(f"creating {path}")
        flags = ["--system-site-packages"] if venv["system_site_packages"] else []
        pip_in_venv = bool(venv["packages"]) and not venv["system_site_packages"]
        chroot(root, "/usr/bin/python3", "-m", "venv", *flags,
               *([] if pip_in_venv else ["--without-pip"]), path)
        if venv["packages"]:
            chroot(root, f"{path}/bin/python", "-m", "pip", "install", "-q", "--no-index",
                   "--find-links", "/var/cache/wheels",
                   *(["--no-deps"] if venv["no_deps"] else []), *venv["packages"])


def _step(building: Path, name: str, action) -> None:
    """Run one build step unless an earlier, interrupted build finished it: debootstrap alone
    takes minutes under emulation, and a failure after it should not cost it again."""
    marker = building / f"{name}.done"
    if marker.exists():
        return
    started = time.monotonic()
    action()
    marker.write_text(f"{time.monotonic() - started:.0f} s\n")
    log(f"{name}: {time.monotonic() - started:.0f} s")


LOCK = CACHE / ".build.lock"


def build() -> Path:
    """Build the userland for this recipe unless it is already there; returns its root. One
    build at a time (a lock file), so that tests can wait for a build CI started beside them."""
    require_root()
    require_tools()
    ensure_binfmt()
    final = CACHE / recipe_key()
    if (final / "ready").is_file():
        return final / "root"
    CACHE.mkdir(mode=0o755, parents=True, exist_ok=True)
    check_chroot_path(CACHE)
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / "ready").is_file():
            return final / "root"
        return _build_locked(final)


def wait_for_build(timeout_s: float) -> bool:
    """Wait while another process builds (holds the lock); True when the userland is ready."""
    if is_built() or not LOCK.exists():
        return is_built()
    deadline = time.monotonic() + timeout_s
    with open(LOCK) as lock:
        while time.monotonic() < deadline:
            try:
                fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                time.sleep(2)
                continue
            fcntl.flock(lock, fcntl.LOCK_UN)
            break
    return is_built()


def _build_locked(final: Path) -> Path:
    building = CACHE / f"{recipe_key()}.building"
    unmount_proc(building / "root")
    if not (building / "debootstrap.done").exists():
        shutil.rmtree(building, ignore_errors=True)  # a half-made userland is not worth keeping
    building.mkdir(mode=0o755, exist_ok=True)
    root = building / "root"
    started = time.monotonic()
    _step(building, "wheels", lambda: download_wheels(building / "wheels"))
    mirror = apt_mirror()
    log(f"debootstrap {RECIPE['suite']} {RECIPE['arch']} from the apt mirror in use")
    _step(building, "debootstrap", lambda: run(
        ["debootstrap", f"--arch={RECIPE['arch']}", f"--variant={RECIPE['variant']}",
         "--include=" + ",".join(RECIPE["include"]), RECIPE["suite"], str(root), mirror],
        timeout=3600))
    _step(building, "venvs", lambda: (_copy_wheels(building, root), make_venvs(root)))
    chroot(root, "/usr/bin/apt-get", "clean")
    (building / "recipe.json").write_text(json.dumps(RECIPE, indent=1, sort_keys=True))
    (building / "ready").write_text(f"{time.monotonic() - started:.0f} s\n")
    os.chmod(root, 0o755)
    building.rename(final)
    log(f"built in {time.monotonic() - started:.0f} s: {final / 'root'}")
    return final / "root"


def _copy_wheels(building: Path, root: Path) -> None:
    target = root / "var" / "cache" / "wheels"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(building / "wheels", target)


# ------------------------------------------------------------------------- accounts and sshd
def mount_proc(root: Path) -> None:
    """A Pi has /proc (cpuinfo, meminfo, the worker's VmHWM): give the userland one."""
    proc = root / "proc"
    if not os.path.ismount(proc):
        run(["mount", "-t", "proc", "proc", str(proc)])


def unmount_proc(root: Path) -> None:
    proc = root / "proc"
    if proc.exists() and os.path.ismount(proc):
        subprocess.run(["umount", "-l", str(proc)], capture_output=True)


def ensure_user(root: Path, name: str) -> None:
    """A host account sshd can log in (password `*`: not locked under UsePAM no), mirrored in
    the userland's passwd with a home there."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        run(["useradd", "--no-create-home", "--home-dir", f"/home/{name}", "--shell", "/bin/sh",
             name])
        entry = pwd.getpwnam(name)
    run(["usermod", "-p", "*", name])
    passwd = root / "etc" / "passwd"
    lines = [line for line in passwd.read_text().splitlines() if not line.startswith(f"{name}:")]
    lines.append(f"{name}:x:{entry.pw_uid}:{entry.pw_gid}::/home/{name}:/bin/sh")
    passwd.write_text("\n".join(lines) + "\n")
    group = root / "etc" / "group"
    if not re.search(rf"^[^:]+:[^:]*:{entry.pw_gid}:", group.read_text(), re.MULTILINE):
        with group.open("a") as handle:
            handle.write(f"{name}:x:{entry.pw_gid}:\n")
    home = root / "home" / name
    home.mkdir(parents=True, exist_ok=True)
    os.chown(home, entry.pw_uid, entry.pw_gid)
    os.chmod(home, 0o755)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def keygen(path: Path) -> None:
    if not path.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "tflc-emulated-pi", "-f",
             str(path)])


def sshd_binary() -> str:
    found = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(found).exists():
        raise Unavailable("OpenSSH server not installed (apt-get install openssh-server)")
    return found


def prepare_login(state_dir: Path, root: Path) -> None:
    """Keys, accounts, /proc: everything a login into the userland needs, idempotently."""
    mount_proc(root)
    for name in USERS:
        ensure_user(root, name)
    state_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    keygen(state_dir / "host_ed25519")
    keygen(state_dir / "client_ed25519")
    (state_dir / "authorized_keys").write_text(
        (state_dir / "client_ed25519.pub").read_text())
    os.chmod(state_dir / "authorized_keys", 0o644)


def sshd_config(state_dir: Path, root: Path, port: int) -> Path:
    config = state_dir / f"sshd_config.{port}"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {state_dir / 'host_ed25519'}\n"
        f"PidFile {state_dir / f'sshd.{port}.pid'}\n"
        f"AuthorizedKeysFile {state_dir / 'authorized_keys'}\n"
        "PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "UsePAM no\nPermitRootLogin no\nPrintMotd no\nPrintLastLog no\nLogLevel VERBOSE\n"
        f"AllowUsers {' '.join(USERS)}\nMaxStartups 100\nMaxSessions 100\n"
        f"Match User {','.join(USERS)}\n  ChrootDirectory {root}\n"
        "  AllowTcpForwarding no\n  X11Forwarding no\n")
    return config


def wait_for_banner(port: int, process: subprocess.Popen, seconds: float = 15) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port),
                                                                    timeout=1) as sock:
            if sock.recv(64).startswith(b"SSH-"):
                return True
        if process.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def start_sshd(state_dir: Path, port: int | None = None) -> dict:
    """Start an sshd for the userland (foreground process, our child); returns its facts:
    {"port", "pid", "root", "client_key", "known_hosts_line", "log", "users", "pythons"}."""
    root = root_dir()
    if not is_built() and not wait_for_build(float(os.environ.get("TFLC_PI_WAIT", 3600))):
        raise Unavailable(f"the emulated Pi is not built ({root} missing); run as root: "
                          "python3 tests/pi/emulated_pi.py build")
    require_root()
    ensure_binfmt()
    check_chroot_path(root)
    prepare_login(state_dir, root)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    port = port or free_port()
    config = sshd_config(state_dir, root, port)
    binary = sshd_binary()
    checked = subprocess.run([binary, "-t", "-f", str(config)], capture_output=True, text=True)
    if checked.returncode != 0:
        raise Unavailable(f"sshd rejects the emulated Pi's configuration: {checked.stderr}")
    logfile = state_dir / f"sshd.{port}.log"
    process = subprocess.Popen([binary, "-D", "-f", str(config), "-E", str(logfile)],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    if not wait_for_banner(port, process):
        process.kill()
        raise Unavailable(f"the emulated Pi's sshd did not start on port {port}: "
                          f"{logfile.read_text()[-300:] if logfile.exists() else ''}")
    key = (state_dir / "host_ed25519.pub").read_text().split()
    return {"port": port, "pid": process.pid, "process": process, "root": str(root),
            "client_key": str(state_dir / "client_ed25519"),
            "known_hosts_line": f"[127.0.0.1]:{port} {key[0]} {key[1]}",
            "log": str(logfile), "users": list(USERS), "pythons": PYTHONS}


def stop_sshd(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, 15)


# ------------------------------------------------------------------------------------- CLI
STATE = CACHE / "sshd"


def cmd_up() -> dict:
    build()
    status_file = STATE / "up.json"
    if status_file.exists():
        facts = json.loads(status_file.read_text())
        if Path(f"/proc/{facts['pid']}").exists() and facts.get("root") == str(root_dir()):
            return facts
    facts = start_sshd(STATE)
    facts.pop("process")
    facts["ssh_config"] = str(write_client_config(STATE, facts))
    status_file.write_text(json.dumps(facts, indent=1))
    return facts


def write_client_config(folder: Path, facts: dict) -> Path:
    """An ssh_config (`tflc bench --ssh-config`) trusting exactly this sshd's host key, with
    the aliases `emulated-pi` and `emulated-pi2` for the two logins."""
    known = folder / "known_hosts"
    known.write_text(facts["known_hosts_line"] + "\n")
    config = folder / "ssh_config"
    aliases = "".join(f"Host emulated-{user}\n  HostName 127.0.0.1\n  Port {facts['port']}\n"
                      f"  User {user}\n" for user in USERS)
    config.write_text(
        f"{aliases}Host *\n  IdentityFile {facts['client_key']}\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {known}\n  GlobalKnownHostsFile /dev/null\n"
        "  PasswordAuthentication no\n  KbdInteractiveAuthentication no\n")
    return config


def cmd_down() -> dict:
    status_file = STATE / "up.json"
    if status_file.exists():
        stop_sshd(json.loads(status_file.read_text())["pid"])
        status_file.unlink()
    return {"stopped": True}


def cmd_status() -> dict:
    facts = {"key": recipe_key(), "root": str(root_dir()), "built": is_built()}
    status_file = STATE / "up.json"
    if status_file.exists():
        facts["sshd"] = json.loads(status_file.read_text())
    return facts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["build", "up", "down", "status"])
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            facts = {"root": str(build())}
        else:
            facts = {"up": cmd_up, "down": cmd_down, "status": cmd_status}[args.command]()
    except Unavailable as exc:
        log(f"unavailable: {exc}")
        return 2
    print(json.dumps(facts, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
