"""Where trials run: worker processes on this machine, or Ray tasks on a cluster.

Both take `run_trial`'s tasks and hand back outcomes as they finish; the driver (one process)
owns the Optuna study and asks and tells. Local workers are spawned processes, one training
thread each, that ignore Ctrl-C (the driver stops them); Ray tasks ask for one CPU each.
"""

from __future__ import annotations

import os
import signal

from tflc.errors import BadInput


def _init_local_worker() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides; it terminates us
    os.dup2(2, 1)  # what TensorFlow or a converter prints never mixes into the driver's stdout
    for name in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        os.environ[name] = "1"
    from tflc.search.trial import configure_threads

    configure_threads(1)


class LocalExecutor:
    """K spawned worker processes (each reused for many trials)."""

    def __init__(self, workers: int):
        import concurrent.futures as cf
        import multiprocessing

        self.slots = workers
        self.name = f"{workers} local worker{'s' if workers > 1 else ''}"
        self._pool = cf.ProcessPoolExecutor(max_workers=workers,
                                            mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_init_local_worker)

    def submit(self, task):
        from tflc.search.trial import run_trial

        return self._pool.submit(run_trial, task)

    def wait_any(self, handles, timeout: float = 1.0):
        """(finished handles with their outcomes, still running handles)."""
        import concurrent.futures as cf

        done, pending = cf.wait(handles, timeout=timeout, return_when=cf.FIRST_COMPLETED)
        finished = []
        for handle in done:
            try:
                finished.append((handle, handle.result()))
            except Exception as exc:  # noqa: BLE001 - the worker died (killed, out of memory)
                finished.append((handle, exc))
        return finished, list(pending)

    def close(self, kill: bool = False, handles=()) -> None:
        if kill:
            for process in list(getattr(self._pool, "_processes", {}).values()):
                process.terminate()
        self._pool.shutdown(wait=not kill, cancel_futures=True)


class RayExecutor:
    """Ray tasks on the cluster at `address` (one CPU each)."""

    def __init__(self, address: str):
        try:
            import ray
        except ImportError:
            raise BadInput("--ray needs Ray, which is not installed: pip install 'tflc[search]'"
                           ) from None
        import logging

        self._ray = ray
        host = probe_address(address)
        local = host in ("localhost", "::1") or host.startswith("127.")
        try:
            # a loopback cluster stays on loopback: the driver's node says 127.0.0.1 too
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False,
                     ignore_reinit_error=True, **({"_node_ip_address": "127.0.0.1"} if local
                                                  else {}))
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise BadInput(f"--ray {address}: no Ray cluster answers there ({_short(exc)}); start "
                           "one with `ray start --head` and pass the address it prints") from None
        self.slots = max(1, int(ray.cluster_resources().get("CPU", 1)))
        nodes = len([n for n in ray.nodes() if n.get("Alive")])
        self.name = f"Ray cluster {address} ({self.slots} CPUs on {nodes} node(s))"
        from tflc.search.trial import run_trial

        self._remote = ray.remote(num_cpus=1, max_retries=0)(run_trial)

    def submit(self, task):
        return self._remote.remote(task)

    def wait_any(self, handles, timeout: float = 1.0):
        ready, pending = self._ray.wait(list(handles), num_returns=1, timeout=timeout)
        finished = []
        for ref in ready:
            try:
                finished.append((ref, self._ray.get(ref)))
            except Exception as exc:  # noqa: BLE001 - a worker died: the trial failed
                finished.append((ref, exc))
        return finished, pending

    def close(self, kill: bool = False, handles=()) -> None:
        if kill:
            for ref in handles:
                try:
                    self._ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - already finished or gone
                    pass
        self._ray.shutdown()


def probe_address(address: str, timeout_s: float = 5.0) -> str:
    """The host of HOST:PORT once something listens there; else one line at once (Ray itself
    would wait minutes for a cluster that is not there)."""
    import socket

    text = address.removeprefix("ray://")
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit():
        raise BadInput(f"--ray {address}: expected HOST:PORT of the cluster's head, e.g. "
                       "127.0.0.1:6379")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise BadInput(f"--ray {address}: no Ray cluster answers there ({exc.strerror or exc}); "
                       "start one with `ray start --head` and pass the address it prints") from None
    return host


def _short(exc: Exception) -> str:
    return " ".join(str(exc).split())[:160]


def make_executor(workers: int, ray_address: str | None):
    return RayExecutor(ray_address) if ray_address else LocalExecutor(workers)
