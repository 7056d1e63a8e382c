"""tflc profile over SSH: the same runner as bench, on a real OpenSSH server on 127.0.0.1."""

from __future__ import annotations

import sys

from tests.bench.conftest import _make_server
from tests.conftest import MLPERF_INT8, need_mlperf
from tflc.profile import ProfileOptions, profile


def test_profile_over_ssh_measures_every_op_and_cleans_up(tmp_path):
    server = _make_server(tmp_path / "sshd")
    try:
        device_tmp = tmp_path / "device-tmp"
        device_tmp.mkdir()
        path = need_mlperf(MLPERF_INT8["ad"])
        result = profile(ProfileOptions(
            str(path), "raspberry-pi-4", device="tflc-test-device", python=sys.executable,
            ssh_config=str(server.client_config()), remote_tmp=str(device_tmp), runs=20,
            min_duration_s=0.0))
        assert result.device == "ssh://tflc-test-device"
        assert all(op.latency_ms is not None for op in result.ops)
        assert result.total.latency_ms > 0 and result.total.sum_op_latency_ms > 0
        # raspberry-pi-4 gives an active power: every measured op carries an energy estimate
        assert all(op.energy_uj is not None for op in result.ops)
        assert list(device_tmp.iterdir()) == []
    finally:
        server.stop()
