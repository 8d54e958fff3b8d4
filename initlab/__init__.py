"""initlab: see what weight initialization does to a neural network.

    import initlab
    cfg = initlab.load_config("configs/xavier_sigmoid.yaml", overrides=["model.depth=10"])
    result = initlab.run(cfg)                # in memory; initlab.run(cfg, out="outputs") writes a run dir
    result.metrics["layers"][0]["std"]
"""
from initlab.errors import ConfigError, DataError, EngineError, InitlabError

__version__ = "0.1.0"

__all__ = ["ConfigError", "DataError", "EngineError", "InitlabError", "load_config", "run", "sweep", "Result", "__version__"]

_LAZY = {
    "load_config": ("initlab.config", "load_config"),
    "run": ("initlab.experiment", "run"),
    "Result": ("initlab.experiment", "Result"),
    "sweep": ("initlab.sweeps.runner", "sweep"),
}


def __getattr__(name):
    # Keep `import initlab` (and so `initlab --help`) free of NumPy, pydantic and matplotlib.
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'initlab' has no attribute {name!r}")
