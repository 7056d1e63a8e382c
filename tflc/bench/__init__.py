"""On-device benchmarking: `bench()` pushes `runner.py` to a device and returns a `BenchResult`.

`runner.py` is the standalone file that runs on the device (standard library, numpy and a TFLite
interpreter only); `transports.py` gets it there (this machine or SSH); `stats.py` summarises the
timings; `summary.py` sets models side by side and the device against the host; `fleet.py`
runs the same benchmark on several devices at once (`bench_fleet`, a `FleetResult`).
"""

from tflc.bench.fleet import FleetResult, bench_fleet
from tflc.bench.session import BenchRecord, BenchResult, bench
from tflc.bench.transports import DeviceError, TransportError

__all__ = ["BenchRecord", "BenchResult", "DeviceError", "FleetResult", "TransportError", "bench",
           "bench_fleet"]
