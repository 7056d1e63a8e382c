"""`tflc bench MODEL --device A --device B ...`: the same benchmark on several devices at once.

Why a fleet is more than a loop: devices differ (a Pi 4 and a Pi 5, two OS images), and
comparing them is only fair when the very same request (models, inputs, seeds, settings) goes
to each, checked once here. Each device gets its own thread and SSH session, so a slow or dead
device does not hold the others up, and its failure costs only its own column: the others'
results are kept, printed and written. Ctrl-C is heard by the main thread alone; it stops the
commands of every device at once (`transports.stop_all`), whose runners then see their
connection close and stop themselves, and leaves with exit code 130 as a single run does.

A device may name its own Python (`ssh://pi@host?python=/home/pi/venv/bin/python`), since the
devices of a fleet rarely keep their runtimes in the same place; `--python` is the default for
the devices that do not.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tflc.bench import transports
from tflc.bench.session import BenchResult, make_plan, measure
from tflc.bench.transports import DeviceError, parse_device
from tflc.errors import BadInput
from tflc.fileio import atomic_write_json
from tflc.version import __version__


@dataclass
class DeviceOutcome:
    """One device of a fleet: its result, or why there is none."""

    device: str
    result: BenchResult | None = None
    error: DeviceError | None = None

    @property
    def ok(self) -> bool:
        return self.result is not None

    def to_dict(self) -> dict:
        if self.result is not None:
            return dict(self.result.to_dict(), ok=True)
        error = self.error
        return {"kind": "bench", "device": self.device, "ok": False,
                "error": {"kind": getattr(error, "kind", "failed"),
                          "message": getattr(error, "message", str(error))}}


@dataclass
class FleetResult:
    """Every device's outcome, in the order the devices were given."""

    devices: list[DeviceOutcome]
    settings: dict
    started_at: float = 0.0
    seconds: float = 0.0
    tflc_version: str = __version__
    artifact_ids: list = field(default_factory=list)

    @property
    def failed(self) -> list[DeviceOutcome]:
        return [outcome for outcome in self.devices if not outcome.ok]

    def to_dict(self) -> dict:
        return {"kind": "bench_fleet", "tflc_version": self.tflc_version,
                "started_at": self.started_at, "seconds": self.seconds,
                "settings": self.settings,
                "devices": [outcome.to_dict() for outcome in self.devices]}

    def write(self, path) -> Path:
        return atomic_write_json(path, self.to_dict())


def parse_fleet(devices) -> list:
    """Every `--device` parsed before anything runs; the same device twice would measure two
    runs competing for one CPU, so it is refused."""
    specs = [parse_device(text) for text in devices]
    labels = [spec.label for spec in specs]
    for label in labels:
        if labels.count(label) > 1:
            raise BadInput(f"--device {label} is given twice; a device runs one benchmark at "
                           "a time")
    return specs


def bench_fleet(models, devices, *, python: str | None = None, output=None,
                **settings) -> FleetResult:
    """Run one plan on every device in parallel; see the module docstring. Bad input raises
    BadInput before any device is touched; a device's failure is its outcome's `error`."""
    started = time.time()
    specs = parse_fleet(devices)
    settings.pop("progress", None)  # one progress bar per thread would garble the terminal
    plan = make_plan(models, python=python, output=output, **settings)
    outcomes = [DeviceOutcome(spec.label) for spec in specs]
    threads = [threading.Thread(target=_measure_into, args=(plan, spec, python, outcome),
                                name=f"bench {spec.label}", daemon=True)
               for spec, outcome in zip(specs, outcomes, strict=True)]
    for thread in threads:
        thread.start()
    _wait_or_stop_all(threads)
    fleet = FleetResult(outcomes, dict(plan.settings, devices=[s.label for s in specs]),
                        started_at=round(started, 3), seconds=round(time.time() - started, 3))
    if output is not None:
        fleet.write(output)
    return fleet


def _measure_into(plan, spec, python, outcome: DeviceOutcome) -> None:
    try:
        outcome.result = measure(plan, spec, python, progress=False)
    except DeviceError as exc:
        outcome.error = exc
    except Exception as exc:  # noqa: BLE001 - one device's bug must not sink the others
        outcome.error = DeviceError("internal", f"{type(exc).__name__}: {exc}")


def _wait_or_stop_all(threads: list) -> None:
    """Join the device threads; on Ctrl-C stop every device's commands, let the threads clean
    up (their folders, their master connections), then interrupt."""
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)
    except KeyboardInterrupt:
        transports.stop_all()
        deadline = time.monotonic() + 30
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        transports.allow_new_runs()
        raise
