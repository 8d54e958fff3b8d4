"""Engine benchmark: one training step of 784-100×5-10 ReLU, batch 100, float32, SGD.

Prints initlab's ms/step, samples/s and share of the machine's nominal FLOP/s. When PyTorch is
installed it trains the same network (same initial weights, same batches) in the same process,
interleaved round by round with initlab, one BLAS thread each, and prints the time ratio
(the goals: initlab ≤ 0.65 × PyTorch; with ``--batchnorm``, BatchNorm after every hidden
Linear in both, ≤ 0.8 × PyTorch with ``nn.BatchNorm1d``). A step is forward, loss, backward and the SGD
update; the minibatches are drawn beforehand, identically for both. Like PyTorch, whose input
tensor does not require a gradient, initlab skips the gradient w.r.t. the input batch
(``model.backward(d, input_grad=False)``); ``--input-grad`` times it with that product.

``--floor`` adds a third engine, ``floor``: initlab's own arithmetic written as bare NumPy calls (no
layers, no checks, no wrappers, the loss gradient computed in place), so the printed ratios show
how much of initlab's step is its Python structure and how much the NumPy operations themselves. It
checks that its weights end bit-identical to initlab's; if they do not, it measured something else.

    python benchmarks/bench_engine.py [--steps N] [--rounds R] [--threads T] [--no-torch] [--input-grad] [--batchnorm] [--floor]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

try:
    from initlab.engine.losses import SoftmaxCrossEntropy
    from initlab.engine.model import InitSpec, build_mlp
    from initlab.engine.optimizers import SGD
except ImportError as e:  # pragma: no cover - a usage hint, not a code path
    sys.exit(f"Error: cannot import initlab ({e}); install it (pip install -e .) or set PYTHONPATH to the repo root")

N_IN, WIDTH, DEPTH, N_OUT, BATCH = 784, 100, 5, 10, 100
LR = 0.01
POOL = 1000  # training inputs the minibatches are drawn from (as the textbook's BN experiment)
N_BATCHES = 20  # distinct minibatches, cycled


def cpu_facts() -> dict:
    """Model name, core count, clock and an assumed FP32 FLOPs/cycle from /proc/cpuinfo's flags."""
    info = {"model": platform.processor() or platform.machine(), "mhz": None, "flags": set()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "model name":
                    info["model"] = value
                elif key == "cpu MHz":
                    info["mhz"] = max(info["mhz"] or 0.0, float(value))
                elif key in ("flags", "Features") and not info["flags"]:
                    info["flags"] = set(value.split())
                elif key == "vendor_id":
                    info["vendor"] = value
    except OSError:
        pass
    flags = info["flags"]
    if "avx512f" in flags and info.get("vendor") == "GenuineIntel":
        info["fpc"], why = 64, "AVX-512, 2 FMA units × 16 lanes × 2"
    elif "avx512f" in flags:
        info["fpc"], why = 32, "AVX-512 on 2 × 256-bit FMA pipes (AMD Zen 4) × 8 lanes × 2"
    elif "avx2" in flags and "fma" in flags:
        info["fpc"], why = 32, "AVX2, 2 FMA units × 8 lanes × 2"
    elif "avx" in flags:
        info["fpc"], why = 16, "AVX, 8-lane add + 8-lane multiply"
    else:
        info["fpc"], why = 8, "unknown vector unit, guessed 8"
    info["fpc_why"] = why
    info["cores"] = os.cpu_count() or 1
    info["ghz"] = (info["mhz"] or 2000.0) / 1000.0
    return info


def step_flops(sizes: list[int], batch: int) -> int:
    """Matrix-product FLOPs of one step: forward, weight gradients, input gradients below layer 1."""
    products = [batch * a * b for a, b in zip(sizes, sizes[1:])]
    return 2 * (2 * sum(products) + sum(products[1:]))


def make_batches(rng) -> list[tuple[np.ndarray, np.ndarray]]:
    pool_x = rng.random((POOL, N_IN), dtype=np.float32)  # pixel-like values in [0, 1)
    pool_y = rng.integers(0, N_OUT, POOL)
    batches = []
    for _ in range(N_BATCHES):
        idx = rng.choice(POOL, BATCH, replace=True)
        batches.append((np.ascontiguousarray(pool_x[idx]), pool_y[idx]))
    return batches


def initlab_trainer(model, batches, input_grad=False):
    loss, opt, params = SoftmaxCrossEntropy(), SGD(LR), model.params()
    state = {"i": 0}

    def step() -> float:
        x, y = batches[state["i"] % len(batches)]
        state["i"] += 1
        value = loss.forward(model.forward(x, train=True), y)
        model.backward(loss.backward(), input_grad=input_grad)
        opt.step(params)
        return value

    return step


def floor_trainer(model, batches):
    """The plain ReLU step of :func:`initlab_trainer` as the NumPy calls the engine ends up making, in
    the same order on the same arrays (the model's own parameter views and flat storage): the fastest
    that arithmetic runs from Python. Any cheaper formulation computes different numbers."""
    linears = [block.linear for block in model.blocks] + [model.head]
    weights, biases = [lin.W.data for lin in linears], [lin.b.data for lin in linears]
    wgrads, bgrads = [lin.W.grad for lin in linears], [lin.b.grad for lin in linears]
    flat = model.params().flat
    scratch, lr = np.empty_like(flat.data), flat.data.dtype.type(LR)
    rows = np.arange(BATCH)
    state = {"i": 0}

    def step() -> float:
        x, y = batches[state["i"] % len(batches)]
        state["i"] += 1
        inputs, preacts, h = [x], [], x
        for W, b in zip(weights[:-1], biases[:-1]):
            z = h @ W
            z += b
            h = np.maximum(z, 0)
            preacts.append(z)
            inputs.append(h)
        logits = h @ weights[-1]
        logits += biases[-1]
        shifted = logits - np.maximum.reduce(np.ascontiguousarray(logits.T), axis=0)[:, None]
        probs = np.exp(shifted)
        total = np.add.reduce(probs, axis=1, keepdims=True)
        probs /= total
        value = -float(np.add.reduce(shifted[rows, y] - np.log(total[:, 0]))) / BATCH
        d = probs  # the loss gradient in place: nobody reads the probabilities again
        d[rows, y] -= 1
        d *= 1.0 / BATCH
        for i in range(len(weights) - 1, -1, -1):
            np.matmul(inputs[i].T, d, out=wgrads[i])
            np.add.reduce(d, axis=0, out=bgrads[i])
            if i:
                d = d @ np.ascontiguousarray(weights[i].T)
                np.multiply(d, preacts[i - 1] > 0, out=d)
        np.multiply(flat.grad, lr, out=scratch)
        flat.data -= scratch
        return value

    return step


def torch_trainer(model, batches):
    import torch

    layers = []
    for block in model.blocks:
        layers.append(torch.nn.Linear(block.linear.fan_in, block.linear.fan_out))
        if block.norm is not None:  # initlab's BatchNorm: eps and momentum as PyTorch's defaults
            layers.append(torch.nn.BatchNorm1d(block.linear.fan_out, eps=block.norm.eps, momentum=block.norm.momentum))
        layers.append(torch.nn.ReLU())
    layers.append(torch.nn.Linear(model.head.fan_in, model.head.fan_out))
    net = torch.nn.Sequential(*layers)
    linears = [block.linear for block in model.blocks] + [model.head]
    with torch.no_grad():
        for mine, theirs in zip(linears, [m for m in net if isinstance(m, torch.nn.Linear)]):
            theirs.weight.copy_(torch.from_numpy(mine.W.data.T.copy()))  # torch stores (out, in)
            theirs.bias.copy_(torch.from_numpy(mine.b.data.copy()))
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    tbatches = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in batches]
    state = {"i": 0}

    def step() -> float:
        x, y = tbatches[state["i"] % len(tbatches)]
        state["i"] += 1
        opt.zero_grad()
        value = torch.nn.functional.cross_entropy(net(x), y)
        value.backward()
        opt.step()
        return value.item()

    return step


def timed(step, n: int) -> tuple[float, float]:
    """Seconds per step over ``n`` steps, and the last loss."""
    start = time.perf_counter()
    for _ in range(n):
        value = step()
    return (time.perf_counter() - start) / n, value


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=1000, help="timed steps per engine (default 1000)")
    ap.add_argument("--rounds", type=int, default=20, help="interleaved rounds the steps are split into (default 20)")
    ap.add_argument("--warmup", type=int, default=50, help="untimed steps per engine first")
    ap.add_argument("--threads", type=int, default=1, help="BLAS / intra-op threads (default 1)")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    ap.add_argument("--input-grad", action="store_true",
                    help="also compute the gradient w.r.t. the input batch (model.backward's default; torch skips it)")
    ap.add_argument("--batchnorm", action="store_true", help="BatchNorm after every hidden Linear (goal <= 0.8 x torch)")
    ap.add_argument("--floor", action="store_true",
                    help="also time initlab's arithmetic as bare NumPy calls (plain network only)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.floor and (args.batchnorm or args.input_grad):
        ap.error("--floor times the plain network's training step: not with --batchnorm or --input-grad")
    if args.steps < 1 or args.rounds < 1 or args.threads < 1 or args.warmup < 0:
        ap.error("--steps, --rounds and --threads must be >= 1, --warmup >= 0")
    rounds = min(args.rounds, args.steps)
    per_round = max(1, args.steps // rounds)

    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            torch = None
    if torch is not None:
        torch.set_num_threads(args.threads)
        torch.manual_seed(args.seed)

    rng = np.random.default_rng(args.seed)
    sizes = [N_IN] + [WIDTH] * DEPTH + [N_OUT]
    def network(rng):
        return build_mlp(N_IN, N_OUT, [WIDTH] * DEPTH, "relu", InitSpec("he_normal"), rng, dtype="float32",
                         batchnorm=args.batchnorm)

    model = network(rng)
    batches = make_batches(rng)
    engines = {"initlab": initlab_trainer(model, batches, args.input_grad)}
    if args.floor:
        floor_model = network(np.random.default_rng(args.seed))  # the same initial weights
        engines["floor"] = floor_trainer(floor_model, batches)
    if torch is not None:
        engines["torch"] = torch_trainer(model, batches)

    with threadpool_limits(limits=args.threads):
        if torch is not None:
            # Same weights, same first batch: the first losses must agree to float32 precision.
            first = {name: step() for name, step in engines.items()}
            if abs(first["initlab"] - first["torch"]) > 1e-4 * max(1.0, abs(first["torch"])):
                print(f"warning: first-step losses differ: {first}", file=sys.stderr)
        for step in engines.values():
            if args.warmup:
                timed(step, args.warmup)
        times = {name: [] for name in engines}
        last = {}
        for r in range(rounds):
            order = list(engines) if r % 2 == 0 else list(reversed(engines))
            for name in order:
                t, last[name] = timed(engines[name], per_round)
                times[name].append(t)
        blas = [f"{i['internal_api']} {i.get('version', '')} ({i.get('architecture', '?')}, {i['num_threads']} thr)"
                for i in threadpool_info() if i["user_api"] == "blas"]

    cpu = cpu_facts()
    flops = step_flops(sizes, BATCH)
    core_peak = cpu["ghz"] * 1e9 * cpu["fpc"]
    machine_peak = core_peak * cpu["cores"]
    env = {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    print(f"network 784-{WIDTH}x{DEPTH}-{N_OUT} {'BatchNorm ' if args.batchnorm else ''}ReLU, batch {BATCH}, float32, SGD lr {LR}; "
          f"{per_round * rounds} timed steps per engine in {rounds} interleaved rounds, {args.threads} thread(s)")
    print(f"cpu: {cpu['model']}, {cpu['cores']} cores at {cpu['ghz']:.2f} GHz (/proc/cpuinfo); assumed "
          f"{cpu['fpc']} FP32 FLOPs/cycle/core ({cpu['fpc_why']}): nominal {machine_peak / 1e9:.0f} GFLOP/s "
          f"for the machine, {core_peak / 1e9:.0f} per core")
    print(f"numpy {np.__version__}, BLAS: {'; '.join(blas) or 'unknown'}; "
          + ", ".join(f"{k}={v if v is not None else 'unset'}" for k, v in env.items()))
    if torch is not None:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    print(f"FLOPs per step: {flops / 1e6:.1f} M (matrix products: forward, weight gradients, input gradients below layer 1)"
          + ("; initlab also computes the input batch's gradient (--input-grad)" if args.input_grad else ""))
    print()
    print(f"{'engine':<8} {'ms/step':>8} {'min':>7} {'samples/s':>10} {'GFLOP/s':>8} {'% machine':>10} {'% 1 core':>9} {'last loss':>10}")
    median = {}
    for name, ts in times.items():
        median[name] = statistics.median(ts)
        gflops = flops / median[name] / 1e9
        print(f"{name:<8} {median[name] * 1e3:8.3f} {min(ts) * 1e3:7.3f} {BATCH / median[name]:10,.0f} {gflops:8.1f} "
              f"{100 * gflops * 1e9 / machine_peak:9.1f}% {100 * gflops * 1e9 / core_peak:8.1f}% {last[name]:10.4f}")
    if "torch" in median:
        # Each round times both engines back to back, so a round's ratio compares like with like
        # even when the machine's load drifts; the median over rounds resists outliers.
        ratios = sorted(a / b for a, b in zip(times["initlab"], times["torch"]))
        ratio = statistics.median(ratios)
        goal = 0.8 if args.batchnorm else 0.65
        print()
        print(f"initlab / torch step time: {ratio:.3f} (median of {rounds} paired rounds, range "
              f"{ratios[0]:.3f}..{ratios[-1]:.3f}; ratio of the medians {median['initlab'] / median['torch']:.3f}); "
              f"goal <= {goal}: {'met' if ratio <= goal else 'NOT met'}; load average {os.getloadavg()[0]:.2f}")
    else:
        print("\n(no comparison: " + ("--no-torch given)" if args.no_torch else "torch is not installed)"))
    if args.floor:
        # Both took the same steps on the same batches: equal weights mean equal arithmetic.
        same = np.array_equal(model.params().flat.data, floor_model.params().flat.data)
        for other in ("initlab", "torch"):
            if other in times:
                ratios = sorted(a / b for a, b in zip(times["floor"], times[other]))
                print(f"floor / {other} step time: {statistics.median(ratios):.3f} (median of {rounds} paired rounds, "
                      f"range {ratios[0]:.3f}..{ratios[-1]:.3f})")
        print(f"floor weights bit-identical to initlab's after the same steps: {'yes' if same else 'NO'}")
        if not same:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
