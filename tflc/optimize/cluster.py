"""The `cluster` stage: TF-MOT weight clustering while fine-tuning, then `strip_clustering`.

Each chosen layer's kernel is restricted to `clusters` shared values (centroids initialised by
k-means++, linearly, by density or at random). A kernel of 16 distinct values compresses well
(the gzip size the report shows) and maps to 4-bit palettes on runtimes that support them.
After a prune stage the sparsity-preserving variant keeps the zeros as their own cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tflc.optimize.layers import kernels, select_layers, wrapped_copy
from tflc.optimize.training import fit
from tflc.tf_env import import_tfmot

_INITS = {"kmeans++": "KMEANS_PLUS_PLUS", "linear": "LINEAR", "density": "DENSITY_BASED",
          "random": "RANDOM"}


@dataclass
class ClusterInfo:
    layers: list[str]
    clusters: int
    preserve_sparsity: bool
    distinct_values: dict[str, int] = field(default_factory=dict)  # per layer, Keras kernels

    def to_dict(self) -> dict:
        return {"layers": self.layers, "clusters": self.clusters,
                "preserve_sparsity": self.preserve_sparsity,
                "distinct_values_keras": self.distinct_values}


def clusterable(layer) -> bool:
    import_tfmot()
    from tensorflow_model_optimization.python.core.clustering.keras import clustering_registry

    return clustering_registry.ClusteringRegistry.supports(layer)


def cluster(model, config, data, task, seed: int, preserve_sparsity: bool = False,
            what: str = "cluster"):
    """Cluster a copy of `model`'s weights while fine-tuning; returns (model, ClusterInfo)."""
    tfmot = import_tfmot()
    names = set(select_layers(model, config.layers, clusterable, what))
    init = getattr(tfmot.clustering.keras.CentroidInitialization, _INITS[config.init])
    if preserve_sparsity:
        from tensorflow_model_optimization.python.core.clustering.keras.experimental import (
            cluster as experimental,
        )

        cluster_weights = experimental.cluster_weights
        extra = {"preserve_sparsity": True}
    else:
        cluster_weights, extra = tfmot.clustering.keras.cluster_weights, {}

    def wrap(layer):
        if layer.name in names:
            return cluster_weights(layer, number_of_clusters=config.clusters,
                                   cluster_centroids_init=init, **extra)
        return layer

    wrapped = wrapped_copy(model, wrap, what, "cluster")
    fit(wrapped, data, config.train, task, seed, description=what)
    stripped = tfmot.clustering.keras.strip_clustering(wrapped)
    distinct = {layer.name: int(max(len(np.unique(np.asarray(k))) for k in kernels(layer)))
                for layer in stripped.layers if layer.name in names}
    return stripped, ClusterInfo(layers=sorted(names), clusters=config.clusters,
                                 preserve_sparsity=preserve_sparsity, distinct_values=distinct)
