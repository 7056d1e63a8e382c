"""Child process for arena probes: can TFLite Micro set up MODEL in N bytes?

Run as `python _arena_probe.py MODEL.tflite`; reads one arena size per line on stdin and answers
one JSON line per size on stdout: {"ok": bool, "log": [lines TFLite Micro printed]}. It lives in
its own process because some TFLite Micro kernels dereference a failed allocation when the arena
is too small and crash the whole process (a segmentation fault, not an error); the parent counts
a crash as "too small" and starts a new child. Imports nothing from tflc, so it starts quickly.
"""

import json
import os
import sys
import tempfile


def main() -> None:
    from tflite_micro.python.tflite_micro import runtime

    with open(sys.argv[1], "rb") as handle:
        model = handle.read()
    out = sys.stdout
    for line in sys.stdin:
        size = int(line)
        sys.stderr.flush()
        saved = os.dup(2)
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                runtime.Interpreter.from_bytes(model, arena_size=size)
                ok = True
            except (RuntimeError, ValueError):
                ok = False
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            sink.seek(0)
            log = sink.read().decode("utf-8", "replace").splitlines()
        out.write(json.dumps({"ok": ok, "log": log[-20:]}) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
