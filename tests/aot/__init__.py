"""Ahead-of-time compilation: the Qualcomm HTP compiler (tflc.aot) and its descriptors."""
