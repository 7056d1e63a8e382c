"""Ahead-of-time compilation for NPUs through vendors' real compilers (LiteRT compiler plugins).

`qualcomm`: Qualcomm's HTP through LiteRT's Qualcomm compiler plugin and QAIRT's x86-64 host
libraries (from the onnxruntime-qnn wheel). No TensorFlow.
"""
