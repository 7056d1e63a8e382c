"""What a device application imports: the deployment guard (`Guard`, `Policy`).

Standard library, numpy and a TFLite interpreter only (ai-edge-litert, tflite-runtime or
tf.lite); nothing of tflc beyond this folder, which `tflc deploy` copies to the device as the
package `tflc_runtime` (relative imports only, so it works under either name).
"""

from .guard import FALLBACK, PRIMARY, Guard, Policy
from .profile import build_profile, read_profile

__all__ = ["FALLBACK", "PRIMARY", "Guard", "Policy", "build_profile", "read_profile"]
