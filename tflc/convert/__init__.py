"""Convert: the loaded (and optimized) model -> fully-integer TFLite bytes, verified and evaluated.

One stage in three modules, run in this order by `tflc.compiler`:

    converter.py         frozen graph -> TFLiteConverter with integer-only op sets (PTQ)
    integer_verifier.py  walks the produced flatbuffer: which tensors and ops are still float
    evaluate.py          float vs int8 accuracy and per-output fidelity, run in LiteRT

`integer_verifier` needs no TensorFlow; the other two import it inside their functions.
"""
