"""What `initlab list` prints: the names of every registry (without importing pydantic or matplotlib),
and each init scheme's formula with its truncation convention (the README's table, in one place)."""
from __future__ import annotations

# Fans of a (fan_in, fan_out) weight; "gain" is init.gain (1 unless given, "auto" = PyTorch's
# calculate_gain). "Not truncated" is PyTorch's convention; Keras truncates its glorot/he/lecun
# normals at ±2σ and rescales them (VarianceScaling), which initlab does only in truncated_normal.
SCHEMES = {
    "zeros": "W = 0 (every unit of a layer stays the same unit)",
    "constant": "W = value·gain everywhere (init.value, default 0.01)",
    "normal": "N(0, (std·gain)²), not truncated: the textbook's randn·std (init.std required)",
    "uniform": "U(±1/√fan_in) (PyTorch nn.Linear), or U(±√3·std·gain) with init.std",
    "truncated_normal": "N(0,1) redrawn outside ±2, then × std·gain/0.8796 so the final std is std·gain: "
                        "Keras's VarianceScaling rule; not Keras's TruncatedNormal (cut at ±2σ, no rescaling, "
                        "final std 0.88σ) nor PyTorch's trunc_normal_ (absolute cutoffs ±2)",
    "xavier_normal": "N(0, gain²·2/(fan_in+fan_out)), not truncated (PyTorch; Keras truncates)",
    "xavier_uniform": "U(±gain·√(6/(fan_in+fan_out)))",
    "he_normal": "N(0, 2·gain²/fan), fan = fan_in (init.mode), not truncated (PyTorch; Keras truncates)",
    "he_uniform": "U(±gain·√(6/fan)), fan = fan_in (init.mode)",
    "lecun_normal": "N(0, gain²/fan_in), not truncated (Keras truncates): the textbook's \"Xavier\" randn/√n",
    "lecun_uniform": "U(±gain·√(3/fan_in))",
    "orthogonal": "QR of a Gaussian matrix, columns' signs fixed by diag(R), × gain (semi-orthogonal if not square)",
    "identity": "the (partial) identity × gain (PyTorch eye_)",
    "lsuv": "orthogonal, then each layer rescaled on a data batch until its output std is 1 (Mishkin & Matas 2016)",
    "fixup": "residual nets: he_normal stem, every (one-layer) branch and the output layer 0 "
             "(Zhang, Dauphin & Ma 2019)",
    "skipinit": "residual nets: he_normal branches behind a learnable scale α = 0 (De & Smith 2020)",
}


def registries() -> dict[str, list[str]]:
    from initlab.data.datasets import DATASETS
    from initlab.engine.activations import ACTIVATIONS
    from initlab.engine.initializers import ALIASES, INITIALIZERS
    from initlab.engine.lsuv import DATA_DEPENDENT
    from initlab.engine.optimizers import OPTIMIZERS
    from initlab.engine.residual import STRUCTURAL

    return {
        "activations": list(ACTIVATIONS),
        "init schemes": [*INITIALIZERS, *ALIASES, *DATA_DEPENDENT, *STRUCTURAL],
        "optimizers": list(OPTIMIZERS),
        "data kinds": list(DATASETS),
    }


def scheme_formulas() -> dict[str, str]:
    """Every init scheme name → its formula and truncation convention (aliases say what they alias)."""
    from initlab.engine.initializers import ALIASES

    names = registries()["init schemes"]
    return {n: (f"= {ALIASES[n]}" if n in ALIASES else SCHEMES.get(n, "")) for n in names}
