"""What `initlab list` prints: the names of every registry, in one place."""
from __future__ import annotations


def registries() -> dict[str, list[str]]:
    from initlab.activations import ACTIVATIONS
    from initlab.config import DATA_KINDS, INIT_SCHEMES
    from initlab.optimizers import OPTIMIZERS

    return {
        "activations": list(ACTIVATIONS),
        "init schemes": list(INIT_SCHEMES),
        "optimizers": list(OPTIMIZERS),
        "data kinds": list(DATA_KINDS),
    }
