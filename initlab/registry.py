"""What `initlab list` prints: the names of every registry (without importing pydantic or matplotlib)."""
from __future__ import annotations


def registries() -> dict[str, list[str]]:
    from initlab.data.datasets import DATASETS
    from initlab.engine.activations import ACTIVATIONS
    from initlab.engine.initializers import ALIASES, INITIALIZERS
    from initlab.engine.lsuv import DATA_DEPENDENT
    from initlab.engine.optimizers import OPTIMIZERS

    return {
        "activations": list(ACTIVATIONS),
        "init schemes": [*INITIALIZERS, *ALIASES, *DATA_DEPENDENT],
        "optimizers": list(OPTIMIZERS),
        "data kinds": list(DATASETS),
    }
