"""Fusion benchmark: token alignment per 2048-token pair and target training tokens/s.

    python benchmarks/fusion_bench.py [--quick]

Alignment is compared with the reference FuseLLM implementation (a Python double loop over the
DTW matrix with a per-cell edit distance), run on a shorter pair and extrapolated by cell count,
and checked to give the same alignments on test pairs. Prints results; writes nothing.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from merge.fusion.align import align_tokens, dtw_cumulative, dtw_path, edit_costs
from tests.fusion.reference import reference_dtw

PAIR_TOKENS = 2048
REFERENCE_TOKENS = 384  # the slow reference runs on this many tokens per side, then is extrapolated
TARGET_SECONDS = 0.3


def token_streams(root: Path) -> dict[str, list[str]]:
    """The same text tokenized by three tokenizers: two byte-level BPEs and a character-level one."""
    from merge.fusion.capture import load_tokenizer
    from node.demo.models import make_tokenizer, synthetic_corpus

    text = " ".join(synthetic_corpus(1500, seed=11))
    streams = {}
    for name, kind, vocab, seed in (("bpe-a", "bpe", 384, 1), ("bpe-b", "bpe", 320, 2), ("char", "char", 0, 1)):
        extra = {"vocab_size": vocab} if vocab else {}
        tok = load_tokenizer(make_tokenizer(root / f"tok-{name}", kind=kind, seed=seed, **extra))
        streams[name] = tok.convert_ids_to_tokens(tok(text, add_special_tokens=False)["input_ids"])
    return streams


def bench_alignment(streams: dict[str, list[str]], repeats: int) -> None:
    src, tgt = streams["bpe-a"][:PAIR_TOKENS], streams["bpe-b"][:PAIR_TOKENS]
    times, parts = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        cost = edit_costs(src, tgt)
        t1 = time.perf_counter()
        acc = dtw_cumulative(cost)
        t2 = time.perf_counter()
        dtw_path(acc)
        t3 = time.perf_counter()
        times.append(t3 - t0)
        parts.append((t1 - t0, t2 - t1, t3 - t2))
    ours = statistics.median(times)
    cells = len(src) * len(tgt)
    print(f"alignment: {len(src)}×{len(tgt)} token pair (two BPE tokenizations of one text), median of {repeats}: "
          f"{ours * 1000:.1f} ms (edit-distance matrix {statistics.median(p[0] for p in parts) * 1000:.1f} ms, "
          f"DTW {statistics.median(p[1] for p in parts) * 1000:.1f} ms, "
          f"backtrack {statistics.median(p[2] for p in parts) * 1000:.1f} ms) = {cells / ours / 1e6:.1f} M cells/s; "
          f"target ≤ {TARGET_SECONDS} s: {'met' if ours <= TARGET_SECONDS else 'MISSED'}")

    rs, rt = src[:REFERENCE_TOKENS], tgt[:REFERENCE_TOKENS]
    t0 = time.perf_counter()
    ref_path = reference_dtw(rs, rt)
    ref_s = time.perf_counter() - t0
    ref_rate = len(rs) * len(rt) / ref_s
    extrapolated = cells / ref_rate
    print(f"reference double loop: {len(rs)}×{len(rt)} in {ref_s:.2f} s = {ref_rate / 1e6:.2f} M cells/s → "
          f"{extrapolated:.2f} s extrapolated to {len(src)}×{len(tgt)}; speed-up {extrapolated / ours:.0f}× "
          f"(target ≥ 20×); same alignment on the {len(rs)}×{len(rt)} pair: {ref_path == align_tokens(rs, rt)}")

    rng = random.Random(0)
    checked = same = 0
    for other in ("bpe-b", "char"):
        for _ in range(20):
            a, b = rng.randint(1, 120), rng.randint(1, 120)
            if rng.random() < 0.5:  # the same text in both tokenizations
                s, t = streams["bpe-a"][:a], streams[other][:b]
            else:  # unrelated windows
                i, j = rng.randrange(len(streams["bpe-a"]) - a), rng.randrange(len(streams[other]) - b)
                s, t = streams["bpe-a"][i:i + a], streams[other][j:j + b]
            checked += 1
            same += align_tokens(s, t) == reference_dtw(s, t)
    print(f"equality with the reference on {checked} random pairs (1–120 tokens a side, BPE×BPE and BPE×char): "
          f"{same}/{checked} identical")


def bench_training(root: Path, device: str, n_examples: int) -> None:
    from safetensors.torch import load_file

    from merge.fusion import load_recipe, run_fusion
    from node.demo.models import TinySpec, make_model, make_tokenizer
    from tests.fusion.world import make_examples, write_jsonl

    spec = TinySpec(n_layers=4, hidden=128, heads=4, intermediate=512, max_positions=256)
    target = make_model(root / f"target-{device}", "gpt2", seed=3,
                        tokenizer_dir=make_tokenizer(root / "tok-t", "bpe", vocab_size=320, seed=2), spec=spec)
    source = make_model(root / f"source-{device}", "llama", seed=1,
                        tokenizer_dir=make_tokenizer(root / "tok-s", "char", seed=1), spec=spec)
    data = write_jsonl(root / "data.jsonl", make_examples(n_examples, seed=5))
    recipe = load_recipe({"target": str(target), "sources": [str(source)], "data": str(data), "epochs": 1,
                          "batch_size": 16, "max_length": 128, "lr": 1e-3, "device": device})
    t0 = time.perf_counter()
    result = run_fusion(recipe, root / f"out-{device}", device=device)
    wall = time.perf_counter() - t0
    n_params = sum(v.numel() for v in load_file(str(root / f"out-{device}" / "model.safetensors")).values())
    print(f"training on {device}: {result.train_tokens_per_s:,.0f} tokens/s ({result.steps} steps, batch 16, "
          f"gpt2-style target with {n_params / 1e6:.2f} M parameters); whole fusion of {n_examples} examples "
          f"(2 captures, alignment, fusion, training, output) {wall:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and examples")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    load = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} CPU cores, load average {load:.1f} (shared with other work: "
          f"timings are upper bounds), torch {torch.__version__}, threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bench_alignment(token_streams(root), repeats=3 if args.quick else 7)
        bench_training(root, "cpu", n_examples=128 if args.quick else 512)
        if torch.cuda.is_available():
            bench_training(root, "cuda", n_examples=512 if args.quick else 2048)


if __name__ == "__main__":
    main()
