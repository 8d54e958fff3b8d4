"""initlab: see what weight initialization does to a neural network.

    import initlab
    cfg = initlab.load_config("configs/xavier_sigmoid.yaml", overrides=["model.depth=10"])
    result = initlab.run(cfg)                # in memory; initlab.run(cfg, out="outputs") writes a run dir
    result.metrics["layers"][0]["std"]
    run = initlab.load_run("outputs/xavier_sigmoid/latest")   # a run directory read back
    run.history["train_loss"], run.to_pandas()["layers"], run.figures()["activations"]
"""
from initlab.errors import ConfigError, DataError, EngineError, InitlabError

__version__ = "0.2.0"

# The version of the layout of metrics.json, manifest.json and every `--json` object
# (docs/FILES.md). Raised when a key changes meaning or goes away; new keys do not raise it.
SCHEMA_VERSION = 1

__all__ = ["ConfigError", "DataError", "EngineError", "InitlabError", "load_config", "run", "sweep", "Result",
           "load_run", "load_sweep", "__version__"]

_LAZY = {
    "load_config": ("initlab.config", "load_config"),
    "run": ("initlab.experiment", "run"),
    "Result": ("initlab.experiment", "Result"),
    "sweep": ("initlab.sweeps.runner", "sweep"),
    "load_run": ("initlab.results", "load_run"),
    "load_sweep": ("initlab.results", "load_sweep"),
}


def __getattr__(name):
    # Keep `import initlab` (and so `initlab --help`) free of NumPy, pydantic and matplotlib.
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'initlab' has no attribute {name!r}")
