"""`tflc search`: hardware-aware architecture and compression search under the target's budgets.

    from tflc.search import SearchOptions, search
    result = search(SearchOptions("model.keras", "cortex-m4", "train.npz", "eval.npz", "out"))

`space` (the automatic search space read from the model's configuration), `trial` (one
candidate: feasibility first, then training and compile), `executors` (local worker processes,
Ray tasks), `core` (the Optuna study, resuming, the Pareto front), `report` (table, PNG, HTML).
Optuna and Ray are imported only when a search runs.
"""

from tflc.search.core import SearchOptions, SearchResult, pareto_front, search

__all__ = ["SearchOptions", "SearchResult", "pareto_front", "search"]
