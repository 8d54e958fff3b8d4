"""What `initlab list` prints: the names of every registry (without importing pydantic or matplotlib)."""
from __future__ import annotations


def registries() -> dict[str, list[str]]:
    from initlab.activations import ACTIVATIONS
    from initlab.data import DATASETS
    from initlab.initializers import ALIASES, INITIALIZERS
    from initlab.optimizers import OPTIMIZERS

    return {
        "activations": list(ACTIVATIONS),
        "init schemes": [*INITIALIZERS, *ALIASES, "lsuv"],
        "optimizers": list(OPTIMIZERS),
        "data kinds": list(DATASETS),
    }
