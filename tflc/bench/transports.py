"""Getting the runner onto a device and its answer back: this machine, or any host over SSH.

Both transports do the same five things: make a private temporary folder on the device, check it
has room, copy files into it, run `runner.py` with the device's Python under a time limit, and
remove the folder again, also when anything failed; one deadline (`--timeout`) covers all of it,
connecting included. SSH goes through the system's OpenSSH client so that `~/.ssh/config`,
agents, jump hosts and keys work as users expect; one master connection (ControlMaster) carries
every command of a run. Host keys are always verified: an unknown host is refused with the
command to trust it, never accepted silently. The runner's stdin stays open for as long as tflc
listens: when tflc goes away (Ctrl-C, killed, disconnected) the runner sees its input end and
stops itself and its workers.

Every failure becomes a `DeviceError` whose `kind` names what went wrong; `TransportError` marks
the ones worth retrying (the host unreachable, the connection lost). Everything the device runs
is built from quoted words (`shlex.quote`), and no user-chosen file name ever reaches the device:
files are copied under fixed names.
"""

from __future__ import annotations

import collections
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from tflc.bench import runner as runner_module
from tflc.errors import BadInput, PipelineError

RUNNER_PATH = Path(runner_module.__file__)
EVENT_PREFIX = runner_module.EVENT_PREFIX
TEMP_PREFIX = runner_module.TEMP_DIR_PREFIX
_STDERR_KEPT = 60  # lines of the device's stderr kept for error messages


class DeviceError(PipelineError):
    """The device could not run the benchmark; `kind` says why (see `interpret_run`)."""

    def __init__(self, kind: str, message: str, **facts):
        super().__init__(message)
        self.kind = kind
        self.facts = facts


class TransportError(DeviceError):
    """A failure of the connection itself: the only kind of failure that is retried."""


@dataclass
class Completed:
    """What came back from running the runner."""

    returncode: int | None
    stdout: bytes
    stderr_lines: list[str]
    timed_out: bool = False
    seconds: float = 0.0

    def stderr_tail(self, lines: int = 6) -> str:
        kept = [line for line in self.stderr_lines if line.strip()]
        return " | ".join(kept[-lines:])


def stream_process(argv: list[str], *, stdin: bytes = b"", timeout_s: float | None = None,
                   on_event=None, new_session: bool = False, cwd=None,
                   hold_stdin: bool = False) -> Completed:
    """Run a process, feed it `stdin`, collect stdout, pass the runner's progress events from
    stderr to `on_event` as they arrive, and kill it (its whole process group when
    `new_session`) when `timeout_s` passes.

    `hold_stdin` keeps the process's stdin open until it ends: a runner over SSH watches it,
    so that when this side goes away (killed, interrupted, disconnected) the end of its input
    tells the runner to stop."""
    start = time.monotonic()
    process = _start(argv, new_session=new_session, cwd=cwd)
    out_chunks: list[bytes] = []
    kept: collections.deque[str] = collections.deque(maxlen=_STDERR_KEPT)
    verbose = bool(os.environ.get("TFLC_DEBUG"))

    def read_stdout():
        out_chunks.append(process.stdout.read())

    def read_stderr():
        for raw in iter(process.stderr.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if line.startswith(EVENT_PREFIX):
                if on_event is not None:
                    try:
                        on_event(json.loads(line[len(EVENT_PREFIX):]))
                    except ValueError:
                        pass
                continue
            kept.append(line)
            if verbose:
                print(f"[device] {line}", file=__import__("sys").stderr)

    readers = [threading.Thread(target=read_stdout, daemon=True),
               threading.Thread(target=read_stderr, daemon=True)]
    for thread in readers:
        thread.start()
    try:
        process.stdin.write(stdin)
        process.stdin.flush()
    except (BrokenPipeError, OSError):
        pass
    finally:
        if not hold_stdin:
            _close_quietly(process.stdin)
    timed_out = False
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill(process, new_session)
    except BaseException:  # Ctrl-C: a runner in its own session would not hear it
        _kill(process, new_session)
        raise
    finally:
        _close_quietly(process.stdin)
        _forget(process)
    for thread in readers:
        thread.join(timeout=5)
    return Completed(process.returncode, b"".join(out_chunks), list(kept), timed_out,
                     time.monotonic() - start)


# Every process stream_process started and that still runs, so that a fleet's Ctrl-C, which
# only the main thread hears, can stop the runs of every device thread at once.
_LIVE: dict = {}
_LIVE_LOCK = threading.Lock()
_CANCELLED = threading.Event()


def _start(argv: list[str], *, new_session: bool, cwd) -> subprocess.Popen:
    with _LIVE_LOCK:
        if _CANCELLED.is_set():
            raise DeviceError("interrupted", "interrupted: no new command is started")
        process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, start_new_session=new_session, cwd=cwd)
        _LIVE[process.pid] = (process, new_session)
    return process


def _forget(process: subprocess.Popen) -> None:
    with _LIVE_LOCK:
        _LIVE.pop(process.pid, None)


def stop_all() -> None:
    """Kill every command this process is running on any device and start no new one: the
    runners see their connection (their stdin) close and stop themselves and their workers."""
    with _LIVE_LOCK:
        _CANCELLED.set()
        live = list(_LIVE.values())
    for process, group in live:
        if process.poll() is None:
            _kill(process, group)


def cancelled() -> bool:
    return _CANCELLED.is_set()


def allow_new_runs() -> None:
    """After a stop_all() has been dealt with (the fleet interrupted and unwound)."""
    _CANCELLED.clear()


def _close_quietly(stream) -> None:
    try:
        stream.close()
    except OSError:
        pass


def _kill(process: subprocess.Popen, group: bool) -> None:
    """Stop a process we started (and, for a runner started in its own session, its workers)."""
    if group:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    process.kill()
    process.wait()


# -------------------------------------------------------------------------------- devices
@dataclass(frozen=True)
class DeviceSpec:
    """`local`, or an SSH destination: `ssh://user@host:port` or an ssh_config host alias;
    `python` is the device's own interpreter (`?python=PATH`), for fleets whose devices keep
    their runtimes in different places. The label leaves it out: it names the device."""

    kind: str  # "local" | "ssh"
    host: str | None = None
    user: str | None = None
    port: int | None = None
    python: str | None = None

    @property
    def label(self) -> str:
        if self.kind == "local":
            return "local"
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"ssh://{user}{host}{port}"


_SAFE_HOST = re.compile(r"^[A-Za-z0-9_.:%\-]+$")
_SAFE_USER = re.compile(r"^[A-Za-z0-9_.\-]+$")


def _device_python(text: str) -> tuple[str, str | None]:
    """Split `DEVICE?python=PATH` into the device and the Python path (None without one)."""
    device, sep, query = text.partition("?")
    if not sep:
        return text, None
    pairs = parse_qs(query, keep_blank_values=True, strict_parsing=False)
    unknown = sorted(set(pairs) - {"python"})
    if unknown or not pairs.get("python") or len(pairs["python"]) != 1:
        raise BadInput(f"--device {text}: after '?' only python=PATH is understood "
                       "(the device's Python, e.g. ?python=/home/pi/venv/bin/python)")
    python = pairs["python"][0]
    if not python or re.search(r"[\x00-\x1f\x7f]", python):
        raise BadInput(f"--device {text}: python= needs a path without control characters")
    return device, python


def parse_device(text: str | DeviceSpec) -> DeviceSpec:
    """`local`, `ssh://[user@]host[:port]`, or an ssh_config alias (`[user@]alias`), each
    optionally followed by `?python=PATH`."""
    if isinstance(text, DeviceSpec):
        return text
    text, python = _device_python((text or "").strip())
    spec = _parse_destination(text)
    return replace(spec, python=python) if python else spec


def _parse_destination(text: str) -> DeviceSpec:
    if text == "local":
        return DeviceSpec("local")
    if text.startswith("ssh://"):
        try:
            parts = urlsplit(text)
            host, user, port = parts.hostname, parts.username, parts.port
        except ValueError as exc:
            raise BadInput(f"--device {text}: {exc}; expected ssh://user@host[:port]") from None
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise BadInput(f"--device {text}: expected ssh://user@host[:port], nothing after it")
    elif "://" in text:
        raise BadInput(f"--device {text}: unknown scheme; use local, ssh://user@host[:port] or "
                       "an ssh_config host alias")
    else:
        user, _, host = text.rpartition("@")
        user, port = user or None, None
    if not host or host.startswith("-") or not _SAFE_HOST.match(host):
        raise BadInput(f"--device {text}: '{host or ''}' is not a host name; use local, "
                       "ssh://user@host[:port] or an ssh_config host alias")
    if user is not None and (user.startswith("-") or not _SAFE_USER.match(user)):
        raise BadInput(f"--device {text}: '{user}' is not a user name")
    return DeviceSpec("ssh", host=host, user=user, port=port)


# ------------------------------------------------------------------------------ transports
class Transport:
    """A device we can put files on and run the runner on. Use as a context manager: entering
    connects and makes the private folder, leaving removes it (also after a failure)."""

    label = "device"
    python = "python3"
    workdir: str | None = None
    deadline: float | None = None  # time.monotonic() by which everything must be over

    def time_left(self, cap: float) -> float:
        """Seconds a step may take: `cap`, or less when the run's deadline comes sooner."""
        if self.deadline is None:
            return cap
        return max(0.0, min(cap, self.deadline - time.monotonic()))

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc_info):
        self.close(failed=exc_info[0] is not None)

    def open(self) -> None: ...

    def close(self, failed: bool = False) -> None: ...

    def free_bytes(self) -> int | None: ...

    def put(self, source: Path, name: str) -> None: ...

    def run_runner(self, request_name: str, timeout_s: float, on_event=None) -> Completed: ...

    def check_space(self, needed: int) -> None:
        free = self.free_bytes()
        if free is not None and free < needed:
            raise DeviceError(
                "disk_full", f"not enough disk space on {self.label}: {self.workdir} has "
                f"{free // 1024} KiB free, the runner, models and data need {needed // 1024} KiB;"
                " free some space or choose another folder with --remote-tmp")


class LocalTransport(Transport):
    """This machine: the same steps as SSH (private folder, copies, a separate process)."""

    label = "local"

    def __init__(self, python: str | None = None, tmp_dir: str | None = None):
        import sys

        self.python = python or sys.executable
        self.tmp_dir = tmp_dir

    def open(self) -> None:
        try:
            self.workdir = tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=self.tmp_dir)
        except OSError as exc:
            raise DeviceError("workdir", f"cannot create a temporary folder in "
                              f"{self.tmp_dir or tempfile.gettempdir()}: {exc.strerror}") from None

    def close(self, failed: bool = False) -> None:
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def free_bytes(self) -> int | None:
        return shutil.disk_usage(self.workdir).free

    def put(self, source: Path, name: str) -> None:
        try:
            shutil.copyfile(source, os.path.join(self.workdir, name))
        except OSError as exc:
            if exc.errno == 28:
                raise DeviceError("disk_full", f"no space left in {self.workdir} while copying "
                                  f"{source}; free some space or use --remote-tmp") from None
            raise

    def run_runner(self, request_name: str, timeout_s: float, on_event=None) -> Completed:
        argv = [self.python, os.path.join(self.workdir, "runner.py"),
                os.path.join(self.workdir, request_name)]
        try:
            return stream_process(argv, timeout_s=timeout_s, on_event=on_event,
                                  new_session=True, cwd=self.workdir, hold_stdin=True)
        except (FileNotFoundError, PermissionError) as exc:
            raise DeviceError("no_python", f"no Python at '{self.python}' on this machine "
                              f"({exc.strerror}); pass --python PATH") from None


# Recognising what went wrong from the OpenSSH client's own messages (exit status 255).
_SSH_FAILURES = (
    ("host_key_changed", False,
     r"REMOTE HOST IDENTIFICATION HAS CHANGED|Host key for .* has changed"),
    ("unknown_host_key", False, r"No \S+ host key is known|Host key verification failed"),
    ("auth", False, r"Permission denied|Too many authentication failures|"
                    r"no matching (host key type|key exchange|cipher)"),
    ("unknown_host", False, r"Could not resolve hostname|Name or service not known"),
    ("unreachable", True, r"Connection refused|No route to host|Connection timed out|"
                          r"Network is unreachable|Operation timed out|timed out during banner"),
    ("connection_lost", True, r"closed by remote host|Connection closed|Connection reset|"
                              r"Broken pipe|Timeout, server .* not responding|client_loop|"
                              r"mux_client|Control socket connect|lost connection"),
)


class SshTransport(Transport):
    """A device reached with the system's `ssh`, one master connection per run."""

    def __init__(self, device: DeviceSpec, python: str = "python3", *,
                 ssh_config: str | os.PathLike | None = None, ssh_options: tuple = (),
                 connect_timeout: float = 10.0, remote_tmp: str | None = None):
        if shutil.which("ssh") is None:
            raise DeviceError("no_ssh", "the OpenSSH client `ssh` is not installed here; "
                              "install it (Debian: apt-get install openssh-client)")
        self.device = device
        self.label = device.label
        self.python = python or "python3"
        self.ssh_config = os.fspath(ssh_config) if ssh_config else None
        self.ssh_options = tuple(ssh_options)
        self.connect_timeout = connect_timeout
        if remote_tmp and re.search(r"[\x00-\x1f\x7f]", remote_tmp):
            raise BadInput(f"--remote-tmp {remote_tmp!r}: a folder name with a newline or "
                           "another control character; choose a plain folder on the device")
        self.remote_tmp = remote_tmp
        self.control_dir: str | None = None
        self._free: int | None = None
        self._resolved: dict | None = None

    # ---- the ssh command line
    def _options(self) -> list[str]:
        options = []
        if self.ssh_config:
            options += ["-F", self.ssh_config]
        # Ours first: OpenSSH keeps the first value it sees, so these cannot be overridden.
        options += ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"]
        if self.control_dir:
            options += ["-o", f"ControlPath={os.path.join(self.control_dir, 'master')}"]
        for option in self.ssh_options:
            options += ["-o", option]
        connect = max(1, int(self.time_left(self.connect_timeout)))
        options += ["-o", f"ConnectTimeout={connect}",
                    "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"]
        if self.device.port:
            options += ["-p", str(self.device.port)]
        return options

    def _destination(self) -> str:
        return f"{self.device.user}@{self.device.host}" if self.device.user else self.device.host

    def _ssh(self, script: str, *, master: bool = False) -> list[str]:
        """The argv running `script` with a POSIX shell on the device."""
        extra = ["-o", "ControlMaster=no"] if self.control_dir and not master else []
        remote = "sh -c " + shlex.quote(script)
        return ["ssh", *self._options(), *extra, self._destination(), remote]

    def resolved(self) -> dict:
        """What `ssh -G` says the destination really is (host name, port, user, known hosts)."""
        if self._resolved is None:
            argv = ["ssh", *(["-F", self.ssh_config] if self.ssh_config else []),
                    *(["-p", str(self.device.port)] if self.device.port else []),
                    "-G", self._destination()]
            try:
                text = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
            except (OSError, subprocess.SubprocessError):
                text = ""
            values = {}
            for line in text.splitlines():
                key, _, value = line.partition(" ")
                values.setdefault(key.lower(), value)
            self._resolved = values
        return self._resolved

    # ---- failures
    def classify(self, stderr: str, during: str) -> DeviceError:
        """Turn the ssh client's complaint into one clear DeviceError."""
        facts = self.resolved()
        host = facts.get("hostname") or self.device.host
        port = facts.get("port") or str(self.device.port or 22)
        user = facts.get("user") or self.device.user or ""
        known = (facts.get("userknownhostsfile") or "~/.ssh/known_hosts").split()[0]
        at = f"{user}@{host}" if user else host
        config = f"-F {shlex.quote(self.ssh_config)} " if self.ssh_config else ""
        reason = " | ".join(line.strip() for line in stderr.splitlines() if line.strip())[-300:]
        for kind, retriable, pattern in _SSH_FAILURES:
            if not re.search(pattern, stderr):
                continue
            cls = TransportError if retriable else DeviceError
            if kind == "unknown_host_key":
                return cls(kind, f"the SSH host key of {host} port {port} is not known, so tflc "
                           f"refuses to connect; check the fingerprint and trust it with: "
                           f"ssh-keyscan -p {port} {host} >> {known}  (or connect once by hand: "
                           f"ssh {config}-p {port} {at})")
            if kind == "host_key_changed":
                return cls(kind, f"the SSH host key of {host} port {port} has CHANGED (the device"
                           f" was reinstalled, or someone is intercepting); if you expected it, "
                           f"remove the old key with: ssh-keygen -R '[{host}]:{port}' -f {known}")
            if kind == "auth":
                return cls(kind, f"SSH authentication refused by {at} port {port} ({reason}); "
                           f"check the key (IdentityFile, ssh-agent) or install yours with: "
                           f"ssh-copy-id -p {port} {at}")
            if kind == "unknown_host":
                return cls(kind, f"cannot resolve the device's host name {host} ({reason}); "
                           "check --device or your ssh_config")
            if kind == "unreachable":
                return cls(kind, f"the device {self.label} is unreachable while {during} "
                           f"({reason}); check that it is on, on the network, and runs sshd")
            return cls(kind, f"the SSH connection to {self.label} was lost while {during} "
                       f"({reason})")
        return TransportError("connection_lost", f"the SSH connection to {self.label} was lost "
                              f"while {during} ({reason or 'ssh exited without a reason'})")

    def _run(self, script: str, during: str, stdin: bytes = b"", timeout: float = 60.0,
             cleanup: bool = False):
        """Run `script` on the device; every step but the clean-up keeps to the deadline."""
        timeout = timeout if cleanup else max(1.0, self.time_left(timeout))
        done = stream_process(self._ssh(script), stdin=stdin, timeout_s=timeout)
        if done.timed_out:
            raise TransportError("unreachable", f"{self.label} did not answer within "
                                 f"{timeout:g} s while {during}")
        if done.returncode == 255:
            raise self.classify("\n".join(done.stderr_lines), during)
        return done

    # ---- the five steps
    def open(self) -> None:
        self.control_dir = tempfile.mkdtemp(prefix="tflc-ssh-")
        log = os.path.join(self.control_dir, "master.log")
        argv = ["ssh", *self._options(), "-o", "ControlMaster=yes", "-o", "ControlPersist=60",
                "-f", "-N", self._destination()]
        limit = max(1.0, self.time_left(self.connect_timeout + 20))
        try:
            with open(log, "wb") as err:
                code = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=err, timeout=limit + 1).returncode
        except subprocess.TimeoutExpired:
            self._drop_control_dir()
            raise TransportError("unreachable", f"connecting to {self.label} took longer than "
                                 f"{limit:g} s") from None
        if code != 0:
            stderr = Path(log).read_text(errors="replace")
            self._drop_control_dir()
            raise self.classify(stderr, "connecting")
        base = shlex.quote(self.remote_tmp) if self.remote_tmp else '"${TMPDIR:-/tmp}"'
        # A relative folder is the device user's home's, as ssh has it; made absolute, it can
        # neither pass for an option nor fail the check below. printf, not echo: dash's echo
        # turns the backslashes of a folder name into escapes.
        script = (f"base={base}; case \"$base\" in /*) ;; *) base=\"$PWD/$base\";; esac; "
                  f"d=$(mktemp -d \"$base/{TEMP_PREFIX}XXXXXX\") || exit 90; "
                  "printf '%s\\n' \"$d\"; df -Pk \"$d\" 2>/dev/null | tail -n 1")
        done = self._run(script, "creating the temporary folder")
        lines = done.stdout.decode(errors="replace").splitlines()
        if done.returncode != 0 or not lines or not lines[0].startswith("/"):
            self.close()
            raise DeviceError("workdir", f"cannot create a temporary folder on {self.label} in "
                              f"{self.remote_tmp or '$TMPDIR or /tmp'} ({done.stderr_tail()}); "
                              "choose a writable folder with --remote-tmp")
        self.workdir = lines[0].strip()
        fields = lines[1].split() if len(lines) > 1 else []
        self._free = int(fields[3]) * 1024 if len(fields) >= 4 and fields[3].isdigit() else None

    def free_bytes(self) -> int | None:
        return self._free

    def put(self, source: Path, name: str) -> None:
        target = shlex.quote(f"{self.workdir}/{name}")
        done = self._run(f"cat > {target}", f"copying {Path(source).name}",
                         stdin=Path(source).read_bytes(), timeout=600)
        if done.returncode != 0:
            tail = done.stderr_tail()
            kind = "disk_full" if "No space left" in tail else "copy"
            raise DeviceError(kind, f"copying {Path(source).name} to {self.label} failed ({tail});"
                              " free some space or choose another folder with --remote-tmp")

    def _python_word(self) -> str:
        """The Python path, quoted; a leading ~/ means the device user's home."""
        if self.python.startswith("~/"):
            return '"$HOME"/' + shlex.quote(self.python[2:])
        return shlex.quote(self.python)

    def run_runner(self, request_name: str, timeout_s: float, on_event=None) -> Completed:
        folder = shlex.quote(self.workdir)
        script = f"cd {folder} && {self._python_word()} runner.py {shlex.quote(request_name)}"
        return stream_process(self._ssh(script), timeout_s=timeout_s, on_event=on_event,
                              hold_stdin=True)

    def close(self, failed: bool = False) -> None:
        try:
            if self.workdir and self.control_dir:
                folder = shlex.quote(self.workdir)
                # `kill -9 -- -PGID` is an error in dash: `-s KILL` is the portable spelling.
                stop = (f"if [ -f {folder}/pgid ]; then kill -s KILL -- -$(cat {folder}/pgid) "
                        "2>/dev/null; fi; " if failed else "")
                try:
                    self._run(f"{stop}rm -rf {folder}", "removing the temporary folder",
                              timeout=30, cleanup=True)
                except DeviceError:
                    pass  # the runner removes its own folder when it ends; nothing more to do
        finally:
            self.workdir = None
            if self.control_dir:
                subprocess.run(["ssh", *self._options(), "-O", "exit", self._destination()],
                               capture_output=True, timeout=15, check=False)
                self._drop_control_dir()

    def _drop_control_dir(self) -> None:
        if self.control_dir:
            shutil.rmtree(self.control_dir, ignore_errors=True)
            self.control_dir = None


def make_transport(device: str | DeviceSpec, python: str | None = None, **ssh) -> Transport:
    """The transport for `--device`: `local`, or SSH with its options."""
    spec = parse_device(device)
    python = spec.python or python
    if spec.kind == "local":
        return LocalTransport(python, tmp_dir=ssh.get("remote_tmp"))
    return SshTransport(spec, python or "python3", **ssh)


# ------------------------------------------------------------------------------ one run
@dataclass
class Upload:
    """A file to copy to the device under a fixed name."""

    source: Path
    name: str
    size: int = field(init=False)

    def __post_init__(self):
        self.size = Path(self.source).stat().st_size


def run_on_device(transport: Transport, uploads: list[Upload], request: dict, *,
                  timeout_s: float, on_event=None, deadline: float | None = None) -> dict:
    """Copy the runner, the files and the request, run it, and return its response.

    Every step, connecting included, keeps to `deadline` (time.monotonic(); default: now plus
    `timeout_s`, which error messages name). The runner is told to stop itself a little before
    it, to remove its folder when it ends and to stop when its connection closes, so that even
    a connection lost mid-run leaves nothing behind.
    """
    transport.deadline = time.monotonic() + timeout_s if deadline is None else deadline
    left = max(1.0, transport.time_left(timeout_s))
    request = dict(request, remove_dir_on_exit=True, pgid_file="pgid",
                   stop_when_stdin_closes=True,
                   deadline_s=max(1.0, left - min(10.0, left * 0.1)))
    with tempfile.TemporaryDirectory(prefix="tflc-request-") as scratch:
        request_path = Path(scratch) / "request.json"
        request_path.write_text(json.dumps(request))
        files = [Upload(RUNNER_PATH, "runner.py"), *uploads, Upload(request_path, "request.json")]
        with transport:
            transport.check_space(sum(item.size for item in files) + 64 * 1024)
            for item in files:
                transport.put(item.source, item.name)
            completed = transport.run_runner("request.json",
                                             max(1.0, transport.time_left(timeout_s)), on_event)
            return interpret_run(completed, transport, timeout_s)


def interpret_run(done: Completed, transport: Transport, timeout_s: float) -> dict:
    """The runner's response, or the DeviceError that explains why there is none."""
    where = transport.label
    response = None
    for line in reversed(done.stdout.decode("utf-8", "replace").splitlines()):
        if line.startswith("{"):
            try:
                response = json.loads(line)
                break
            except ValueError:
                continue
    if done.timed_out:
        raise DeviceError("timeout", f"the benchmark did not finish within {timeout_s:g} s on "
                          f"{where}; raise --timeout, or lower --runs, --min-duration or --repeat")
    if isinstance(response, dict) and "protocol" in response:
        if response.get("protocol") != runner_module.PROTOCOL:
            raise DeviceError("protocol", f"the runner on {where} answered in protocol "
                              f"{response.get('protocol')}, expected {runner_module.PROTOCOL}")
        if response.get("ok"):
            return response
        error = dict(response.get("error") or {})
        kind, message = error.pop("kind", "runner"), error.pop("message", "unknown error")
        if kind == "timeout":
            message = (f"the benchmark did not finish within {timeout_s:g} s on {where} "
                       "(the runner stopped itself); raise --timeout, or lower --runs, "
                       "--min-duration or --repeat")
        elif kind == "host_gone":
            raise TransportError("connection_lost", f"the connection to {where} was lost "
                                 "during the run")
        else:
            message = f"on {where}: {message}"
        raise DeviceError(kind, message, **error)
    tail = done.stderr_tail()
    code = done.returncode
    if isinstance(transport, SshTransport) and code == 255:
        raise transport.classify("\n".join(done.stderr_lines), "running the benchmark")
    if code == 127 or re.search(r"(python\S*|runner\.py).*(not found|No such file)", tail):
        raise DeviceError(
            "no_python", f"no Python at '{transport.python}' on {where} ({tail}); install "
            "Python 3 with numpy (Debian/Raspberry Pi OS: sudo apt install python3 python3-numpy) "
            "or pass --python PATH")
    if code in (137, -9):
        raise DeviceError("killed", f"the runner on {where} was killed (SIGKILL), most often by "
                          "the out-of-memory killer; check `dmesg` and free memory on the device")
    if "SyntaxError" in tail:
        raise DeviceError("old_python", f"'{transport.python}' on {where} cannot run the runner "
                          f"({tail}); it needs Python 3.8 or newer: pass --python PATH")
    raise DeviceError("runner", f"the runner failed on {where} with exit status {code}"
                      f" ({tail or 'no message'})")
