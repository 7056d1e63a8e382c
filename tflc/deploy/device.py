"""Releases on a device over SSH (or on this machine with `--device local`).

On the device, under ROOT (`--root`, default `~/tflc-releases`):

    ROOT/NAME/releases/ID-DIGEST/   model.tflite, profile.json, release.json, fallback/, tflc_runtime/
    ROOT/NAME/current  -> releases/...   the release the application loads: Guard("ROOT/NAME/current")
    ROOT/NAME/previous -> releases/...   the one before (kept, for `tflc rollback NAME --device D`)
    ROOT/NAME/history                    release folders, oldest first (the links follow from it)
    ROOT/NAME/telemetry/guard.jsonl*     what the guard writes (release.json names the file)

A deploy streams one tar archive into `releases/.incoming-XXXXXX`, whose last member is a marker:
a truncated stream (a dropped connection, Ctrl-C) fails before anything changes. The device's own
Python then loads the release with the guard and runs one sample; only then is the folder renamed
into place, the history rewritten (write and rename) and the links replaced by rename. Every word
the device's shell sees is quoted; the release name is a registry label and the folder names are
hex digests; the scripts are constant text.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
import tarfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tflc.errors import BadInput, PipelineError

DEFAULT_ROOT = "~/tflc-releases"
KEEP = 3  # release folders kept on the device (the history's newest)
COMPLETE = ".complete"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_REF = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)@(?P<which>[A-Za-z]+)$")


@dataclass
class DeployResult:
    device: str
    name: str
    artifact: str
    release: str  # the folder under ROOT/NAME/releases
    root: str
    fallback: str | None
    previous: str | None
    files: list
    bytes: int
    device_check: dict
    removed: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RollbackResult:
    device: str
    name: str
    current: str
    replaced: str
    previous: str | None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TelemetrySummary:
    device: str
    releases: dict  # name -> summary (sessions, samples, state, events, drift series)
    files: list
    output_dir: str | None = None
    plot: str | None = None
    notes: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------ the device
class Shell:
    """Scripts on the device: the bench's SSH transport (one master connection, host keys
    checked, failures in one line), or `sh` here for `--device local`."""

    def __init__(self, device: str, python: str | None = None, *, ssh_config=None,
                 ssh_options: tuple = (), connect_timeout: float = 10.0):
        from tflc.bench.transports import DeviceSpec, SshTransport, parse_device

        spec = parse_device(device)
        self.label = spec.label
        self._ssh = None
        if spec.kind == "local":
            self.python = spec.python or python or sys.executable
            self.python_word = shlex.quote(self.python)
            return

        class _Ssh(SshTransport):
            def script(self, text, during, stdin=b"", timeout=120.0):
                return self._run(text, during, stdin=stdin, timeout=timeout)

        assert isinstance(spec, DeviceSpec)
        self._ssh = _Ssh(spec, spec.python or python or "python3", ssh_config=ssh_config,
                         ssh_options=tuple(ssh_options), connect_timeout=connect_timeout)
        self.python = self._ssh.python
        self.python_word = self._ssh._python_word()

    def __enter__(self):
        if self._ssh is not None:
            self._ssh.open()
        return self

    def __exit__(self, *exc_info):
        if self._ssh is not None:
            self._ssh.close()

    def run(self, script: str, during: str, stdin: bytes = b"", timeout: float = 300.0):
        """(exit code, stdout text, stderr text) of `script` run by the device's sh."""
        if self._ssh is not None:
            done = self._ssh.script(script, during, stdin=stdin, timeout=timeout)
            return (done.returncode, done.stdout.decode("utf-8", "replace"),
                    "\n".join(done.stderr_lines))
        try:
            done = subprocess.run(["sh", "-c", script], input=stdin, capture_output=True,
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise PipelineError(f"local: {during} took longer than {timeout:g} s") from None
        return (done.returncode, done.stdout.decode("utf-8", "replace"),
                done.stderr.decode("utf-8", "replace"))


def _root_word(root: str) -> str:
    """The root folder as one shell word; a leading ~/ is the device user's home."""
    if not root or re.search(r"[\x00-\x1f\x7f]", root):
        raise BadInput(f"--root {root!r}: a folder name without control characters is needed")
    if root == "~":
        return '"$HOME"'
    if root.startswith("~/"):
        return '"$HOME"/' + shlex.quote(root[2:])
    return shlex.quote(root)


def _check_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise BadInput(f"release name {name!r}: use letters, digits, '.', '_' and '-' (up to 64, "
                       "starting with a letter or digit), as `tflc promote --as` does")
    return name


def _last_json(text: str) -> dict | None:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


def _fail(label: str, what: str, code: int, stderr: str) -> PipelineError:
    reason = " | ".join(line.strip() for line in stderr.splitlines() if line.strip())[-400:]
    return PipelineError(f"{label}: {what} failed (exit {code}: {reason or 'no message'})")


# ------------------------------------------------------------------------------ the release
def _resolve(ref: str, registry=None) -> tuple:
    """(name, artifact id, model path, profile path) of `NAME@current`, `NAME@previous` or an id."""
    from tflc.store.refs import resolve_model_ref
    from tflc.store.registry import Registry

    match = _REF.match(ref or "")
    if not match:
        raise BadInput(f"{ref}: give a release as NAME@current (or NAME@previous); "
                       "`tflc promote ID --as NAME` makes one")
    name = _check_name(match["name"])
    artifact = Registry(registry).release(name, match["which"])
    model = resolve_model_ref(ref, registry)
    profile = model.parent / "profile.json"
    if not profile.is_file():
        raise BadInput(f"{ref}: artifact {artifact} has no profile.json (compiled before tflc "
                       "wrote calibration profiles); compile it again and promote the result")
    return name, artifact, model, profile


def _resolve_fallback(fallback, name: str, artifact: str, registry=None):
    """(label, model path, profile path or None) of the fallback, or None for none."""
    from tflc.store.registry import Registry

    if fallback is False:
        return None
    if fallback is None:  # the default: the release before this one, when there is one
        try:
            previous = Registry(registry).release(name, "previous")
        except BadInput:
            return None
        if previous == artifact:
            return None
        fallback = f"{name}@previous"
    path = Path(fallback)
    if path.is_dir():
        path = path / "model.tflite"
    if path.suffix == ".tflite" and path.is_file():
        profile = path.parent / "profile.json"
        return os.fspath(fallback), path, profile if profile.is_file() else None
    if _REF.match(str(fallback)):
        from tflc.store.refs import resolve_model_ref

        model = resolve_model_ref(str(fallback), registry)
        profile = model.parent / "profile.json"
        return str(fallback), model, profile if profile.is_file() else None
    raise BadInput(f"--fallback {fallback}: not a .tflite, a compile output folder or a release "
                   "(NAME@previous)")


def build_payload(name: str, artifact: str, model: Path, profile: Path, fallback, policy=None):
    """(tar bytes, release folder name, file list): the release as the device will hold it."""
    import tflc.runtime as runtime_package

    runtime_dir = Path(runtime_package.__file__).parent
    files: dict[str, bytes] = {"model.tflite": model.read_bytes(),
                               "profile.json": profile.read_bytes()}
    if fallback is not None:
        _, fb_model, fb_profile = fallback
        files["fallback/model.tflite"] = Path(fb_model).read_bytes()
        if fb_profile is not None:
            files["fallback/profile.json"] = Path(fb_profile).read_bytes()
    for source in sorted(runtime_dir.glob("*.py")):
        files[f"tflc_runtime/{source.name}"] = source.read_bytes()
    release = {"name": name, "artifact": artifact,
               "model_sha256": hashlib.sha256(files["model.tflite"]).hexdigest(),
               "fallback": "fallback" if fallback is not None else None,
               "fallback_source": fallback[0] if fallback is not None else None,
               "telemetry": "../../telemetry/guard.jsonl", "policy": policy}
    digest = hashlib.sha256()
    for key in sorted(files):
        digest.update(key.encode() + b"\0" + hashlib.sha256(files[key]).digest())
    digest.update(json.dumps(release, sort_keys=True).encode())
    folder = f"{artifact}-{digest.hexdigest()[:8]}"
    release["release"] = folder
    files["release.json"] = (json.dumps(release, indent=2) + "\n").encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for key in sorted(files):
            _add(tar, key, files[key])
        _add(tar, COMPLETE, folder.encode())  # last: a truncated stream lacks it
    return buffer.getvalue(), folder, sorted(files)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tar.addfile(info, io.BytesIO(data))


# The device side: constant scripts; data only through argv and stdin.
_VERIFY = r"""
import json, sys
folder = sys.argv[1]
sys.path.insert(0, folder)
import numpy as np
from tflc_runtime import Guard
guard = Guard(folder, telemetry=None)
samples = [m.replacement.reshape(m.shape[1:]).astype(np.float32) for m in guard._monitors]
out = guard.predict(samples if len(samples) > 1 else samples[0])
ok = all(bool(np.isfinite(o).all()) for o in (out if isinstance(out, list) else [out]))
print(json.dumps({"runtime": guard.primary.runtime, "python": sys.version.split()[0],
                  "numpy": np.__version__, "fallback": guard.fallback is not None,
                  "outputs_finite": ok}))
"""

_LINKS = r"""
import json, os, shutil, sys
folder, action = sys.argv[1], sys.argv[2]
path = os.path.join(folder, "history")
history = open(path).read().split() if os.path.exists(path) else []
history = [h for h in history if os.path.isdir(os.path.join(folder, "releases", h))]
replaced = None
if action == "deploy":
    release, keep = sys.argv[3], int(sys.argv[4])
    history = [h for h in history if h != release] + [release]
    removed = history[:-keep]
    history = history[-keep:]
else:
    if len(history) < 2:
        print(json.dumps({"error": "nothing to roll back to", "history": history}))
        sys.exit(93)
    replaced, removed = history.pop(), []
def write(name, text):
    tmp = os.path.join(folder, "." + name + ".new")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, os.path.join(folder, name))
def link(name, target):
    tmp = os.path.join(folder, "." + name + ".link")
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(os.path.join("releases", target), tmp)
    os.replace(tmp, os.path.join(folder, name))
write("history", "".join(h + "\n" for h in history))
link("current", history[-1])
if len(history) > 1:
    link("previous", history[-2])
elif os.path.lexists(os.path.join(folder, "previous")):
    os.unlink(os.path.join(folder, "previous"))
for old in removed:
    shutil.rmtree(os.path.join(folder, "releases", old), ignore_errors=True)
print(json.dumps({"current": history[-1], "previous": history[-2] if len(history) > 1 else None,
                  "replaced": replaced, "removed": removed}))
"""


def deploy(ref: str, device: str, *, fallback=None, root: str = DEFAULT_ROOT, python=None,
           policy: dict | None = None, keep: int = KEEP, ssh_config=None, ssh_options=(),
           registry=None, timeout: float = 600.0) -> DeployResult:
    """Push release `ref` (NAME@current) to `device`; see the module's docstring.

    `fallback`: None (NAME@previous when the registry has one), False (none), a .tflite, a
    compile output folder or a release reference.
    """
    if policy is not None:
        from tflc.runtime.guard import Policy

        try:
            Policy.from_dict(policy)
        except (TypeError, ValueError) as exc:
            raise BadInput(f"--policy: {exc}") from None
    if not isinstance(keep, int) or keep < 2:
        raise BadInput(f"--keep {keep}: keep at least 2 releases (the current and the previous)")
    root_word = _root_word(root)
    name, artifact, model, profile = _resolve(ref, registry)
    chosen = _resolve_fallback(fallback, name, artifact, registry)
    payload, folder, files = build_payload(name, artifact, model, profile, chosen, policy)
    dir_word = f'{root_word}/{shlex.quote(name)}'
    with Shell(device, python, ssh_config=ssh_config, ssh_options=ssh_options) as shell:
        py = shell.python_word
        script = deploy_script(dir_word, py, folder, keep)
        code, out, err = shell.run(script, f"deploying {name}", stdin=payload, timeout=timeout)
    from tflc.store.manifests import record_deploy

    recorded = {"name": name, "artifact": artifact, "registry": registry,
                "settings": {"root": root, "keep": keep, "fallback": chosen[0] if chosen else None}}
    if code == 92:
        error = PipelineError(f"{shell.label}: the release {name} ({artifact}) does not load on "
                              f"the device, which keeps its current release: "
                              f"{_device_reason(err)}")
        record_deploy(ref, shell.label, "refused", reason=error.message, **recorded)
        raise error
    if code != 0:
        error = _fail(shell.label, f"deploying {name}; the device keeps its current release",
                      code, err)
        record_deploy(ref, shell.label, "failed", reason=getattr(error, "message", str(error)),
                      **recorded)
        raise error
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    check, links = (lines + [{}, {}])[:2] if len(lines) >= 2 else ({}, lines[-1] if lines else {})
    done = DeployResult(device=shell.label, name=name, artifact=artifact, release=folder, root=root,
                        fallback=chosen[0] if chosen else None, previous=links.get("previous"),
                        files=files, bytes=len(payload), device_check=check,
                        removed=links.get("removed", []))
    record_deploy(ref, shell.label, "deployed", done=done, **recorded)
    return done


def deploy_script(dir_word: str, py: str, folder: str, keep: int) -> str:
    """The device's side of a deploy: the tar archive arrives on stdin."""
    return (
        "set -e; umask 022\n"
        f"dir={dir_word}\n"
        'mkdir -p "$dir/releases" "$dir/telemetry"\n'
        # folders of deploys cut short before (their shell killed outright) go first
        'for old in "$dir"/releases/.incoming-*; do [ -d "$old" ] && rm -rf "$old"; done\n'
        'tmp=$(mktemp -d "$dir/releases/.incoming-XXXXXX")\n'
        "trap 'rm -rf \"$tmp\"' EXIT\n"
        'tar -xf - -C "$tmp" || { echo "the upload was cut short" >&2; exit 91; }\n'
        f'[ -f "$tmp/{COMPLETE}" ] || {{ echo "the upload was cut short" >&2; exit 91; }}\n'
        f'{py} -c {shlex.quote(_VERIFY)} "$tmp" || exit 92\n'
        f'rel="$dir/releases/{folder}"\n'
        'if [ -d "$rel" ]; then rm -rf "$tmp"; else mv "$tmp" "$rel"; fi\n'
        "trap - EXIT\n"
        f'{py} -c {shlex.quote(_LINKS)} "$dir" deploy {folder} {int(keep)}\n')


def _device_reason(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):  # the exception's own line, not the traceback around it
        if re.match(r"^[A-Za-z_.]*(Error|Exception|NoInterpreter)\b", line):
            return line[:300]
    return (lines[-1] if lines else "no message")[:300]


def rollback_device(name: str, device: str, *, root: str = DEFAULT_ROOT, python=None,
                    ssh_config=None, ssh_options=()) -> RollbackResult:
    """Make the device's previous release of NAME current again (the rolled-back one is kept
    until later deploys prune it). The registry's NAME@current is not changed."""
    _check_name(name)
    dir_word = f'{_root_word(root)}/{shlex.quote(name)}'
    with Shell(device, python, ssh_config=ssh_config, ssh_options=ssh_options) as shell:
        script = (f'dir={dir_word}\n'
                  '[ -d "$dir/releases" ] || { echo "no-release" >&2; exit 94; }\n'
                  f'{shell.python_word} -c {shlex.quote(_LINKS)} "$dir" rollback\n')
        code, out, err = shell.run(script, f"rolling back {name}")
    if code == 94:
        raise BadInput(f"{shell.label}: no release named '{name}' under {root}; deploy one "
                       "with `tflc deploy NAME@current --device ...`")
    answer = _last_json(out) or {}
    if code == 93:
        raise BadInput(f"{shell.label}: '{name}' has a single release there "
                       f"({', '.join(answer.get('history', [])) or 'none'}); nothing to roll back to")
    if code != 0:
        raise _fail(shell.label, f"rolling back {name}", code, err)
    return RollbackResult(shell.label, name, answer["current"], answer["replaced"],
                          answer.get("previous"))


# ------------------------------------------------------------------------------ telemetry
_MARK = "\x1etflc-file "


def fetch_telemetry(device: str, *, name: str | None = None, root: str = DEFAULT_ROOT,
                    output_dir=None, python=None, ssh_config=None, ssh_options=()) -> TelemetrySummary:
    """The guard's telemetry of NAME (every release under ROOT without one), summarized; with
    `output_dir`, also written there: telemetry.jsonl (all records, oldest first, each with its
    `release` name), summary.json and drift.png (drift score over time, when matplotlib is here)."""
    from tflc.fileio import atomic_write_bytes, atomic_write_json, ensure_writable_dir

    if name is not None:
        _check_name(name)
    if output_dir is not None:
        ensure_writable_dir(output_dir, "telemetry folder")
    names = shlex.quote(name) if name else "*"
    script = (f"root={_root_word(root)}\n"
              f'for d in "$root"/{names}/telemetry; do\n'
              '  [ -d "$d" ] || continue\n'
              '  n=$(basename "$(dirname "$d")")\n'
              '  for f in "$d"/guard.jsonl*; do\n'
              '    [ -f "$f" ] || continue\n'
              f"    printf '{_MARK}%s %s\\n' \"$n\" \"$(basename \"$f\")\"; cat \"$f\"; echo\n"
              "  done\n"
              "done\n")
    with Shell(device, python, ssh_config=ssh_config, ssh_options=ssh_options) as shell:
        code, out, err = shell.run(script, "reading telemetry")
    if code != 0:
        raise _fail(shell.label, "reading telemetry", code, err)
    chunks: dict[tuple, list] = {}
    current = None
    for line in out.split("\n"):  # not splitlines(): it splits at the marker's \x1e too
        if line.startswith(_MARK):
            release, _, file = line[len(_MARK):].partition(" ")
            current = (release, file)
            chunks[current] = []
        elif current is not None and line.strip():
            chunks[current].append(line)
    if not chunks:
        where = f"{root}/{name}/telemetry" if name else f"{root}/*/telemetry"
        raise BadInput(f"{shell.label}: no telemetry in {where}; the application's Guard writes "
                       "it there when it loads a deployed release")
    records_by_release: dict[str, list] = {}
    files = []
    for (release, file) in sorted(chunks, key=lambda k: (k[0], -_rotation(k[1]))):
        files.append(f"{release}/{file}")
        for line in chunks[(release, file)]:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line torn by a power cut
            if isinstance(record, dict):
                records_by_release.setdefault(release, []).append(record)
    summary = TelemetrySummary(shell.label, {r: summarize(v) for r, v in records_by_release.items()},
                               files)
    if output_dir is not None:
        out_dir = Path(output_dir)
        lines = [json.dumps({"release": r, **rec}, separators=(",", ":"))
                 for r, recs in records_by_release.items() for rec in recs]
        atomic_write_bytes(out_dir / "telemetry.jsonl", ("\n".join(lines) + "\n").encode())
        png = drift_plot(summary)
        if png is not None:
            atomic_write_bytes(out_dir / "drift.png", png)
            summary.plot = os.fspath(out_dir / "drift.png")
        else:
            summary.notes.append("no plot: matplotlib is not installed (pip install matplotlib)")
        summary.output_dir = os.fspath(out_dir)
        atomic_write_json(out_dir / "summary.json", summary.to_dict())
    return summary


def _rotation(file: str) -> int:
    suffix = file.rsplit(".", 1)[-1]
    return int(suffix) if suffix.isdigit() else 0


def summarize(records: list) -> dict:
    """Sessions, samples, the last state, the events and the drift series of one release."""
    sessions = [r for r in records if r.get("kind") == "start"]
    stats = [r for r in records if r.get("kind") == "stats"]
    events = [r for r in records if r.get("kind") == "event"]
    samples, last_sample = 0, 0
    for record in records:  # samples count anew in every session
        if record.get("kind") == "start":
            samples += last_sample
            last_sample = 0
        elif isinstance(record.get("sample"), int):
            last_sample = max(last_sample, record["sample"])
    samples += last_sample
    series = [[r.get("time"), r.get("drift_score"), r.get("state")] for r in stats]
    scores = [s[1] for s in series if isinstance(s[1], (int, float))]
    last = stats[-1] if stats else {}
    return {"sessions": len(sessions), "samples": samples, "state": last.get("state"),
            "drift_max": max(scores) if scores else None,
            "drift_last": scores[-1] if scores else None, "counts": last.get("counts"),
            "events": [{k: e.get(k) for k in ("time", "sample", "event", "reasons",
                                              "drift_score", "action")} for e in events],
            "artifacts": sorted({s.get("artifact") for s in sessions if s.get("artifact")}),
            "drift": series}


def drift_plot(summary: TelemetrySummary) -> bytes | None:
    """drift.png: each release's drift score over time, 1.0 (the switch) dashed, fallback
    periods shaded, events marked; None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    figure, axes = plt.subplots(figsize=(8, 3.2), dpi=100)
    start = min((p[0] for r in summary.releases.values() for p in r["drift"] if p[0]), default=0)
    for release, data in summary.releases.items():
        points = [(p[0] - start, p[1], p[2]) for p in data["drift"] if p[0] is not None]
        if not points:
            continue
        axes.plot([p[0] for p in points], [p[1] for p in points], label=release, linewidth=1.2)
        for t, _, state in points:
            if state == "fallback":
                axes.axvspan(t - 0.5, t + 0.5, color="tab:red", alpha=0.08, linewidth=0)
        for event in data["events"]:
            if event.get("time"):
                axes.axvline(event["time"] - start, color="tab:red", linewidth=0.8, alpha=0.6)
    axes.axhline(1.0, color="black", linestyle="--", linewidth=0.8)
    axes.set_xlabel("seconds since the first record")
    axes.set_ylabel("drift score (1 switches)")
    axes.set_title(f"telemetry of {summary.device}")
    axes.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()


def sparkline(values: list, width: int = 48) -> str:
    """The drift series in one line of block characters (1.0 and above: a full block)."""
    values = [v for v in values if isinstance(v, (int, float))]
    if not values:
        return ""
    if len(values) > width:  # the largest of each stretch: a spike must not vanish
        step = len(values) / width
        values = [max(values[int(i * step):max(int((i + 1) * step), int(i * step) + 1)])
                  for i in range(width)]
    blocks = " ▁▂▃▄▅▆▇█"
    return "".join(blocks[min(8, int(round(min(v, 1.0) * 8)))] for v in values)


def format_time(t) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) if isinstance(t, (int, float)) else "-"
