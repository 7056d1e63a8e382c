"""Load: the user's model (`models`) and data (`data` for calibration and evaluation,
`train_data` for the pipeline's training sets), each checked before any slow work.

Loading a model never runs code the user did not ask for: layers that carry code are found by
parsing the model's configuration and refused (`models`). TensorFlow is imported inside the
functions that need it, never when this package is imported.
"""
