"""Deploying a release to a device, reading its telemetry back, rolling it back there.

`tflc deploy NAME@current --device D` pushes the release (model.tflite, profile.json, the
fallback model and the device runtime, `tflc.runtime` copied as the package `tflc_runtime`)
over SSH as one tar stream into a temporary folder beside the releases, checks on the device
that the guard loads it, and only then renames it into place and switches the `current` link
(the previous release stays, `previous` points to it). An interrupted or refused deploy leaves
the device's current release as it was. `tflc telemetry D` fetches the guard's JSONL files and
summarizes them; `tflc rollback NAME --device D` makes the device's previous release current.
"""

from tflc.deploy.device import (
    DeployResult,
    RollbackResult,
    TelemetrySummary,
    deploy,
    fetch_telemetry,
    rollback_device,
)

__all__ = ["DeployResult", "RollbackResult", "TelemetrySummary", "deploy", "fetch_telemetry",
           "rollback_device"]
