"""Theory beside measurement at initialization, for one config, without training or writing anything
(what ``initlab theory`` prints)."""
from __future__ import annotations


def measure(cfg) -> dict:
    """Prediction and measurement at init, without training or writing anything."""
    import numpy as np

    from initlab.experiment import blas_threads, build
    from initlab.recorder import Recorder
    from initlab.theory.measure import predict_for

    with blas_threads(), np.errstate(all="ignore"):
        data, model, loss, *_ = build(cfg)
        probe = slice(0, min(cfg.record.samples, len(data.x_train)))
        pred = predict_for(cfg, data.x_train[probe], model).to_dict()
        snap = Recorder(data.x_train[probe], data.y_train[probe], loss, cfg.record.bins).snapshot(model, 0)
    layers = []
    for i, p in enumerate(pred["layers"]):
        measured = snap.layer(i)
        layers.append({"layer": i + 1, "predicted_preact_std": p["preact_std"], "predicted_std": p["std"],
                       "predicted_mean": p["mean"], "preact_std": measured["preact_std"], "std": measured["std"],
                       "mean": measured["mean"]})
    theory = {k: v for k, v in pred.items() if k != "layers"}
    return {"name": cfg.name, "config_hash": cfg.hash, "theory": theory, "layers": layers}
