"""Benchmark: `mergenet merge` vs `mergekit-yaml` (mergekit 0.1.5) on a ~270M-parameter bf16 set.

    python benchmarks/merge_bench.py [--methods linear,ties,slerp,task_arithmetic,della,sce,nuslerp]
                                     [--mergekit PATH] [--tiny]

Generates a Llama-shaped base and two "fine-tuned" experts (random bf16 safetensors, two shards
each, under benchmarks/_work/), then for each method runs both tools as separate processes on
the same recipe (`dtype: float32` compute, `out_dtype: bfloat16`), alternating them, and prints
per method: wall time, GB/s of input weights, peak RSS (the child's ru_maxrss), the floor (read
every input once from page cache + sha256 of every input file, which `mergenet merge` records in
the model card + write the output's bytes; one after the other, on one core), mergekit's figures
from the same run, the ratios against the targets, and how many output elements differ by more
than one bf16 ulp. mergenet runs as `python -m node.cli.main` from this checkout (the code
measured is the code beside this file); mergekit from the project's .venv (or .venv-mergekit, or
--mergekit). The load average is printed at the start: on a loaded machine the figures are not
results. On a CUDA machine it also times `--device cuda` and reports GB/s of weights read +
written. DELLA draws its drop masks from a different random source than mergekit, so its outputs
are not compared element by element (only timed). `--tiny` runs the same code path on a
Llama-shaped model of a few hundred thousand parameters (under benchmarks/_work/tiny/): a smoke
test of the script, not a measurement. Not a test: numbers depend on the machine and on
whatever else shares its CPU.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parent
WORK = ROOT / "_work"
REPO = ROOT.parent
# Llama-shaped: 32000 vocab, hidden 1024, 16 layers, MLP 2816 → ≈ 271M parameters.
SHAPE = {"vocab": 32000, "hidden": 1024, "layers": 16, "intermediate": 2816, "heads": 16}
TINY_SHAPE = {"vocab": 384, "hidden": 64, "layers": 2, "intermediate": 128, "heads": 4}
# Speed-up targets against mergekit, and methods that should run within FLOOR_TARGET × the floor.
TARGETS = {"ties": 4.0}
FLOOR_TARGET = 2.0
NEAR_FLOOR = ("linear", "slerp", "task_arithmetic")
RANDOMIZED = {"della"}  # different random draws than mergekit: outputs not compared
RSS_TARGET = 0.4
ABS_TOL = 1e-6  # below bf16 resolution of any weight that matters; catches x − x cancellations
TIES_DENSITIES = (0.5, 0.3)  # expert1, expert2 in the ties recipe below


def tensor_shapes() -> dict[str, tuple[int, ...]]:
    v, h, n, i = SHAPE["vocab"], SHAPE["hidden"], SHAPE["layers"], SHAPE["intermediate"]
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (v, h)}
    for layer in range(n):
        p = f"model.layers.{layer}."
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            shapes[f"{p}self_attn.{proj}.weight"] = (h, h)
        shapes[f"{p}mlp.gate_proj.weight"] = (i, h)
        shapes[f"{p}mlp.up_proj.weight"] = (i, h)
        shapes[f"{p}mlp.down_proj.weight"] = (h, i)
        shapes[f"{p}input_layernorm.weight"] = (h,)
        shapes[f"{p}post_attention_layernorm.weight"] = (h,)
    shapes["model.norm.weight"] = (h,)
    shapes["lm_head.weight"] = (v, h)
    return shapes


def write_model(folder: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Two shards plus an index, config and tokenizer: a Hugging Face style folder."""
    from transformers import LlamaConfig

    folder.mkdir(parents=True, exist_ok=True)
    names = list(tensors)
    half = len(names) // 2
    files = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    weight_map = {}
    for file, part in files.items():
        save_file({n: tensors[n] for n in part}, str(folder / file), metadata={"format": "pt"})
        weight_map.update({n: file for n in part})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    cfg = LlamaConfig(vocab_size=SHAPE["vocab"], hidden_size=SHAPE["hidden"], intermediate_size=SHAPE["intermediate"],
                      num_hidden_layers=SHAPE["layers"], num_attention_heads=SHAPE["heads"],
                      num_key_value_heads=SHAPE["heads"], tie_word_embeddings=False, torch_dtype="bfloat16",
                      architectures=["LlamaForCausalLM"])
    cfg.save_pretrained(folder)
    for f in (WORK / "tokenizer").iterdir():
        shutil.copy(f, folder / f.name)


def make_models() -> tuple[Path, Path, Path]:
    base, e1, e2 = WORK / "base", WORK / "expert1", WORK / "expert2"
    if all((m / "model.safetensors.index.json").is_file() for m in (base, e1, e2)):
        return base, e1, e2
    from node.demo.models import make_tokenizer

    make_tokenizer(WORK / "tokenizer")
    gen = torch.Generator().manual_seed(0)
    shapes = tensor_shapes()
    base_t = {n: (torch.randn(s, generator=gen) * 0.02 + (1.0 if len(s) == 1 else 0.0)).to(torch.bfloat16)
              for n, s in shapes.items()}
    write_model(base, base_t)
    for folder, scale in ((e1, 0.004), (e2, 0.003)):
        out = {}
        for n, t in base_t.items():
            delta = torch.randn(t.shape, generator=gen) * scale
            delta *= torch.rand(t.shape, generator=gen) < 0.6
            out[n] = (t.float() + delta).to(torch.bfloat16)
        write_model(folder, out)
    return base, e1, e2


def recipe(method: str, base: Path, e1: Path, e2: Path) -> dict:
    common = {"dtype": "float32", "out_dtype": "bfloat16"}
    if method == "linear":
        return {"merge_method": "linear", **common, "models": [
            {"model": str(base), "parameters": {"weight": 0.4}}, {"model": str(e1), "parameters": {"weight": 0.3}},
            {"model": str(e2), "parameters": {"weight": 0.3}}]}
    if method == "ties":
        return {"merge_method": "ties", "base_model": str(base), **common, "models": [
            {"model": str(e1), "parameters": {"weight": 0.6, "density": TIES_DENSITIES[0]}},
            {"model": str(e2), "parameters": {"weight": 0.4, "density": TIES_DENSITIES[1]}}]}
    if method == "task_arithmetic":
        return {"merge_method": "task_arithmetic", "base_model": str(base), **common, "models": [
            {"model": str(e1), "parameters": {"weight": 0.6}}, {"model": str(e2), "parameters": {"weight": 0.4}}]}
    if method == "della":
        return {"merge_method": "della", "base_model": str(base), **common, "parameters": {"random_seed": 0},
                "models": [{"model": str(e1), "parameters": {"weight": 0.6, "density": 0.5, "epsilon": 0.15}},
                           {"model": str(e2), "parameters": {"weight": 0.4, "density": 0.4, "epsilon": 0.1}}]}
    if method == "sce":
        return {"merge_method": "sce", "base_model": str(base), **common, "parameters": {"select_topk": 0.5},
                "models": [{"model": str(e1)}, {"model": str(e2)}]}
    if method == "nuslerp":
        return {"merge_method": "nuslerp", "base_model": str(base), **common,
                "models": [{"model": str(e1), "parameters": {"weight": 0.6}},
                           {"model": str(e2), "parameters": {"weight": 0.4}}]}
    if method == "slerp":
        return {"merge_method": "slerp", "base_model": str(base), **common,
                "parameters": {"t": [{"filter": "self_attn", "value": [0, 0.5, 0.3, 0.7, 1]},
                                     {"filter": "mlp", "value": [1, 0.5, 0.7, 0.3, 0]}, {"value": 0.5}]},
                "slices": [{"sources": [{"model": str(base), "layer_range": [0, SHAPE["layers"]]},
                                        {"model": str(e1), "layer_range": [0, SHAPE["layers"]]}]}]}
    raise ValueError(method)


# Runs one command and reports its own resources. It is a separate small process because Linux
# carries a parent's peak RSS into children it forks: measured from this (large) process,
# ru_maxrss would report at least our own size.
_WRAPPER = """
import json, os, subprocess, sys, time
start = time.perf_counter()
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
err = proc.stderr.read()
_, status, usage = os.wait4(proc.pid, 0)
print(json.dumps({"wall": time.perf_counter() - start, "rss_gb": usage.ru_maxrss / 1e6,
                  "cpu": usage.ru_utime + usage.ru_stime, "code": os.waitstatus_to_exitcode(status),
                  "err": err.decode(errors="replace")[-2000:]}))
"""


def timed(cmd: list[str], env: dict[str, str] | None = None) -> dict:
    """Wall seconds, CPU seconds and peak RSS (GB) of one run of `cmd`; raises if it fails."""
    out = subprocess.run([sys.executable, "-c", _WRAPPER, *cmd], capture_output=True, text=True, env=env, check=True,
                         cwd=REPO)
    res = json.loads(out.stdout)
    if res["code"]:
        raise RuntimeError(f"{cmd[0]} failed ({res['code']}): {res['err']}")
    return res


def median_run(runs: list[dict]) -> dict:
    """The median run by wall time (the lower median for an even count): one unlucky or lucky run
    on a shared machine decides nothing."""
    ordered = sorted(runs, key=lambda r: r["wall"])
    return ordered[(len(ordered) - 1) // 2]


def _weight_files(models: list[Path]) -> list[Path]:
    return [f for m in dict.fromkeys(models) for f in sorted(m.glob("*.safetensors"))]


def read_seconds(models: list[Path]) -> float:
    """Seconds to read every input weight file once (best of two: the first warms the page cache)."""
    buf = bytearray(16 << 20)
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        for f in _weight_files(models):
            with open(f, "rb", buffering=0) as fh:
                while fh.readinto(buf):
                    pass
        best = min(best, time.perf_counter() - start)
    return best


def hash_seconds(models: list[Path]) -> float:
    """Seconds to sha256 every input weight file on one core (what the model card records)."""
    buf = bytearray(16 << 20)
    view = memoryview(buf)
    start = time.perf_counter()
    for f in _weight_files(models):
        h = hashlib.sha256()
        with open(f, "rb", buffering=0) as fh:
            while n := fh.readinto(buf):
                h.update(view[:n])
    return time.perf_counter() - start


def write_seconds(nbytes: int) -> float:
    """Seconds to write `nbytes` into a new file under WORK (into the page cache, as a merge does)."""
    block = bytes(16 << 20)
    path = WORK / "floor-write.bin"
    start = time.perf_counter()
    with open(path, "wb", buffering=0) as fh:
        for done in range(0, nbytes, len(block)):
            fh.write(block[:min(len(block), nbytes - done)])
    seconds = time.perf_counter() - start
    path.unlink()
    return seconds


def floor_seconds(models: list[Path], out_bytes: int) -> dict[str, float]:
    """The floor of one merge: read and hash its inputs, write its output, one after the other."""
    parts = {"read": read_seconds(models), "hash": hash_seconds(models), "write": write_seconds(out_bytes)}
    return {**parts, "total": sum(parts.values())}


def inputs_of(method: str, base: Path, e1: Path, e2: Path) -> list[Path]:
    return [base, e1] if method == "slerp" else [base, e1, e2]


def load_dir(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def compare(a_dir: Path, b_dir: Path, inputs: list[Path] | None = None) -> dict:
    """Elements differing by more than one bf16 ulp (and by more than ABS_TOL, so that results
    which cancel to ~0 in both tools do not count), of how many, the max |difference|, and (for
    TIES, given [base, experts...]) how many of the differing elements sit where some expert's
    |delta| equals its trim threshold: a tie that each tool may break differently."""
    a, b = load_dir(a_dir), load_dir(b_dir)
    if set(a) != set(b):
        raise RuntimeError(f"tensor names differ: {sorted(set(a) ^ set(b))[:3]}")
    res = {"bad": 0, "total": 0, "max": 0.0, "tied": 0}
    readers = [load_dir(m) for m in inputs] if inputs else None
    for k in a:
        x, y = a[k].float(), b[k].float()
        diff = (x - y).abs()
        ulp = torch.maximum(x.abs(), y.abs()) * 2.0**-7 + ABS_TOL  # bf16 keeps 8 significant bits
        bad = diff > ulp
        res["bad"] += int(bad.sum())
        res["total"] += x.numel()
        res["max"] = max(res["max"], float(diff.max()))
        if readers and bad.any():
            base = readers[0][k].float()
            tied = torch.zeros_like(bad)
            for expert, density in zip(readers[1:], TIES_DENSITIES, strict=True):
                mag = (expert[k].float() - base).abs().reshape(-1)
                kk = max(1, int(density * mag.numel()))
                thr = mag.kthvalue(mag.numel() - kk + 1).values
                tied |= (mag == thr).reshape(bad.shape)
            res["tied"] += int((bad & tied).sum())
    return res


def default_mergekit() -> str:
    for venv in (".venv", ".venv-mergekit"):
        if (REPO / venv / "bin" / "mergekit-yaml").is_file():
            return str(REPO / venv / "bin" / "mergekit-yaml")
    return str(REPO / ".venv-mergekit" / "bin" / "mergekit-yaml")


def run_method(method: str, args: argparse.Namespace, models: tuple[Path, Path, Path], env: dict[str, str],
               have_mergekit: bool) -> tuple[dict[str, dict], dict | None]:
    """Best run of each tool on one method (tools alternate), and the element comparison."""
    rpath = WORK / f"{method}.yaml"
    rpath.write_text(yaml.safe_dump(recipe(method, *models)))
    outs = {tool: WORK / f"out-{method}-{tool}" for tool in ("mergenet", "mergekit", "cuda")}
    runs: dict[str, list[dict]] = {"mergenet": [], "mergekit": [], "cuda": []}
    for _ in range(args.repeat):  # alternate the tools so that background load hits both alike
        for tool in runs:
            if (tool == "mergekit" and not have_mergekit) or (tool == "cuda" and not torch.cuda.is_available()):
                continue
            shutil.rmtree(outs[tool], ignore_errors=True)
            tool_env = env
            if tool == "mergekit":
                cmd = [args.mergekit, str(rpath), str(outs[tool]), "--quiet"]
                if args.mergekit_pythonpath:
                    tool_env = {**env, "PYTHONPATH": args.mergekit_pythonpath}
            else:
                cmd = [sys.executable, "-m", "node.cli.main", "merge", str(rpath), "-o", str(outs[tool]),
                       "--home", str(WORK / "home"), "--device", "cpu" if tool == "mergenet" else "cuda"]
            runs[tool].append(timed(cmd, tool_env))
    inputs = list(models) if method == "ties" else None
    comparable = have_mergekit and method not in RANDOMIZED
    diff = compare(outs["mergenet"], outs["mergekit"], inputs) if comparable else None
    for o in outs.values():
        shutil.rmtree(o, ignore_errors=True)
    return {t: median_run(r) for t, r in runs.items() if r}, diff


def verdict(method: str, ours: dict, theirs: dict | None, floor: float) -> str:
    checks = []
    if method in TARGETS and theirs:
        checks.append(theirs["wall"] / ours["wall"] >= TARGETS[method])
    if method in NEAR_FLOOR:
        checks.append(ours["wall"] <= FLOOR_TARGET * floor)
    if theirs and (method in TARGETS or method in NEAR_FLOOR):
        checks.append(ours["rss_gb"] <= RSS_TARGET * theirs["rss_gb"])
    return "-" if not checks else "ok" if all(checks) else "MISS"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="linear,ties,slerp,task_arithmetic")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs per tool and method, alternating; the median run is reported")
    ap.add_argument("--mergekit", default=default_mergekit())
    ap.add_argument("--mergekit-pythonpath", default="",
                    help="extra PYTHONPATH for mergekit only, e.g. a `pip install --target DIR immutables peft "
                         "accelerate` where the venv lacks those dependencies of mergekit-yaml")
    ap.add_argument("--tiny", action="store_true", help="a few-layer toy model: checks the script, measures nothing")
    args = ap.parse_args()
    global WORK
    load = os.getloadavg()
    print(f"CPU: {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at start "
          "(figures are results only on a quiet machine)")
    if args.tiny:  # its own folder, so the cached full-size models are never mistaken for these
        SHAPE.update(TINY_SHAPE)
        WORK = WORK / "tiny"
    WORK.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    models = make_models()
    n_params = sum(torch.Size(s).numel() for s in tensor_shapes().values())
    print(f"model set: 3 × {n_params / 1e6:.0f}M parameters (bf16), ready in {time.perf_counter() - t0:.0f}s\n")
    env = {**os.environ, "MERGENET_NO_PROGRESS": "1", "TOKENIZERS_PARALLELISM": "false"}
    have_mergekit = Path(args.mergekit).is_file()
    print(f"{'method':<15} {'mergenet s':>10} {'cpu s':>6} {'GB/s':>5} {'RSS GB':>6} {'floor s':>7} "
          f"{'(read+hash+write)':>18} {'÷floor':>6} {'mergekit s':>10} {'cpu s':>6} {'RSS GB':>6} "
          f"{'speed-up':>8} {'RSS ratio':>9}  verdict; outputs vs mergekit")
    cuda = []
    for method in args.methods.split(","):
        inputs = inputs_of(method, *models)
        in_bytes = sum(f.stat().st_size for f in _weight_files(inputs))
        floor = floor_seconds(inputs, n_params * 2)  # the output is bf16
        r, diff = run_method(method, args, models, env, have_mergekit)
        ours, theirs = r["mergenet"], r.get("mergekit")
        parts = f"{floor['read']:.2f}+{floor['hash']:.2f}+{floor['write']:.2f}"
        line = (f"{method:<15} {ours['wall']:>10.2f} {ours['cpu']:>6.1f} {in_bytes / 1e9 / ours['wall']:>5.2f} "
                f"{ours['rss_gb']:>6.2f} {floor['total']:>7.2f} {parts:>18} {ours['wall'] / floor['total']:>5.1f}×")
        if theirs is None:
            print(f"{line} {'-':>10} {'-':>6} {'-':>6} {'-':>8} {'-':>9}  "
                  f"{verdict(method, ours, None, floor['total'])}")
        else:
            if diff is None:
                same = "not compared (randomized: different draws than mergekit)"
            else:
                same = (f"{diff['bad']} of {diff['total'] / 1e6:.2f}M elements > 1 bf16 ulp apart "
                        f"(max |d| {diff['max']:.1e})"
                        + (f", {diff['tied']} of them at tied trim thresholds" if method == "ties" and diff["bad"]
                           else ""))
            print(f"{line} {theirs['wall']:>10.2f} {theirs['cpu']:>6.1f} {theirs['rss_gb']:>6.2f} "
                  f"{theirs['wall'] / ours['wall']:>7.2f}× {ours['rss_gb'] / theirs['rss_gb']:>9.2f}  "
                  f"{verdict(method, ours, theirs, floor['total'])}; {same}")
        if "cuda" in r:
            cuda.append((method, r["cuda"], (len(inputs) + 1) * n_params * 2 / 1e9))
    print(f"\nTargets: ties ≥{TARGETS['ties']:.0f}× mergekit; {', '.join(NEAR_FLOOR)} within {FLOOR_TARGET:.0f}× the "
          f"floor; peak RSS ≤{RSS_TARGET}× mergekit. Median of {args.repeat} alternating runs; wall times include "
          f"process start-up. Load average at the end: {os.getloadavg()[0]:.2f}")
    for method, run, moved in cuda:  # inputs read + output written (bf16)
        print(f"cuda {method}: {run['wall']:.2f}s wall, {moved / run['wall']:.2f} GB/s of weights "
              "read + written (including process start-up; compare with the card's memory bandwidth)")
    if not have_mergekit:
        print(f"mergekit not found at {args.mergekit}: only mergenet was timed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
