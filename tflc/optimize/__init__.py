"""The compression pipeline: stages that change a Keras model before it is converted to int8.

Read it in the order a run goes through it:

    config.py       the pipeline YAML (and the compile flags) -> PipelineConfig, validated
    pipeline.py     resolve_config() and run_pipeline(): stages in order, each evaluated against
                    the float model's accuracy, rolled back when it costs more than the budget
    prune.py        TF-MOT magnitude pruning (schedules, 2:4 structure, per-layer `auto`)
    cluster.py      TF-MOT weight clustering
    distill.py      knowledge distillation from a teacher into a student
    qat.py          quantization-aware training (PQAT after prune, CQAT after cluster)
    sensitivity.py  per-layer accuracy drop when one layer alone is pruned or quantized
    measure.py      what a stage's model becomes in int8: .tflite size, gzip size, zeros per layer
    report.py       the stage table and the accuracy-vs-size plot

Nothing here imports TensorFlow at module level; TF-MOT needs tf_keras models, and Keras 3 models
are rebuilt as tf_keras first (`tflc.optimize.keras_rebuild`).
"""
