"""The streaming executor: load one tensor's inputs, merge them in float32, write, forget.

    result = run_merge(load_recipe("ties.yaml"), Path("out/merged"), device="auto")
    tensors = compute_tensors(recipe, ["model.layers.0.mlp.up_proj.weight"])   # spot-check
    (the non-tensor files it writes come from `merge.outputs`, where a verifier computes them too)
    out = merge_tensor(task, inputs, base, method=METHODS["ties"], device="cpu")

Fourth step of the pipeline (recipe → plan → method → executor → writer). On CPU two worker
threads compute tensors side by side (torch releases the GIL) while this thread writes finished
ones in order; tasks are admitted only while the float32 bytes of the tasks in flight stay within
those of the largest single task, so peak memory stays about (inputs + 2) × the largest tensor
plus the runtime, as for one tensor at a time. Each op still splits across torch's intra-op
threads as before, so the bytes are those of the one-at-a-time loop. Compute is float32 on the
chosen device; the output dtype is `out_dtype`, else the recipe's
`out_dtype`, else its `dtype`, else each tensor's input dtype. Randomized methods draw from a
generator seeded by (random_seed, output tensor name), so results do not depend on the order
or subset of tensors computed and are byte-identical run to run on the same device.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from merge.device import pick_device
from merge.errors import MergeInputError
from merge.io import CENSUS, ModelReader
from merge.methods import MergeMethod
from merge.outputs import CARD_FILE, card_bytes, config_files, requested_dtype, tensor_layout
from merge.plan import MergePlan, TensorTask, plan_merge
from merge.recipe import Recipe
from merge.tokenizer.embed import align_task
from merge.writer import DEFAULT_SHARD_SIZE, ShardedWriter

log = logging.getLogger(__name__)

# Two compute threads keep both cores of a small machine busy and overlap one tensor's reads,
# conversions and write with another's compute; on a shared machine they also spare torch's
# intra-op barriers the stalls a single busy thread suffers. More would multiply memory.
COMPUTE_THREADS = 2
# Large tensors of elementwise methods are merged in row ranges of about this many entries (16 MB
# in float32): the embedding of a 270M model alone is 131 MB per input.
PIECE_ELEMENTS = 1 << 22
FLOAT32_BYTES = 4


@dataclass(frozen=True)
class MergeResult:
    out_dir: Path
    n_tensors: int
    bytes_written: int
    seconds: float
    device: str


def tensor_generator(seed: int, name: str, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator seeded from (seed, tensor name): order-independent, reproducible randomness."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return torch.Generator(device=device).manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def merge_tensor(task: TensorTask, inputs: list[torch.Tensor], base: torch.Tensor | None, *, method: MergeMethod,
                 device: torch.device | str = "cpu", generator: torch.Generator | None = None,
                 consume: bool = False) -> torch.Tensor:
    """Merge one tensor in float32 on `device`; returns it there.

    `inputs`/`base` are the tensors named by `task.inputs`/`task.base`. They are left untouched
    unless `consume` is true (the executor hands over tensors it loaded, saving a copy each).
    With `task.vocab` set they are already aligned to the output vocabulary (`_load` does it).
    Randomized methods get a generator from `tensor_generator(task.seed, task.name)` if none is given.
    """
    device = torch.device(device)
    if not task.mergeable:  # integer buffers and the like: copied, never averaged
        return (base if base is not None else inputs[0]).to(device)

    def prep(t: torch.Tensor) -> torch.Tensor:
        out = t.to(device=device, dtype=torch.float32)
        return out.clone() if out is t and not consume else out

    xs = [prep(t) for t in inputs]
    b = None  # methods never write to the base, so it is not copied
    if base is not None:
        b = base.to(device=device, dtype=torch.float32)
    if method.randomized and generator is None:
        generator = tensor_generator(task.seed, task.name, device)
    out = CENSUS.track(method.fn(xs, b, [dict(p) for p in task.model_params], dict(task.global_params), generator))
    del xs, b
    return out


def _load(readers: dict[str, ModelReader], task: TensorTask, device: torch.device,
          rows: tuple[int, int] | None = None) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    def get(src):
        return readers[src.model].get(src.tensor, device=device, row_range=rows) if src else None

    inputs, base = [get(s) for s in task.inputs], get(task.base)
    return align_task(task.vocab, task, inputs, base) if task.vocab is not None else (inputs, base)


def _pieces(task: TensorTask, method: MergeMethod, device: torch.device,
            readers: dict[str, ModelReader]) -> list[tuple[int, int]] | None:
    """Row ranges of about PIECE_ELEMENTS entries to merge `task` in, or None to merge it whole:
    only for elementwise methods (same bits either way) on a CPU, without vocabulary alignment,
    from readers that read row ranges by themselves (not a model with a LoRA applied)."""
    n = math.prod(task.shape)
    sources = [s for s in (*task.inputs, task.base) if s is not None]
    if not (method.elementwise and task.mergeable and task.vocab is None and device.type == "cpu"
            and len(task.shape) >= 2 and n > PIECE_ELEMENTS and all(readers[s.model].ranged for s in sources)):
        return None
    rows = task.shape[0]
    step = max(1, PIECE_ELEMENTS // (n // rows))
    return [(a, min(a + step, rows)) for a in range(0, rows, step)]


def _compute(readers: dict[str, ModelReader], plan: MergePlan, task: TensorTask, device: torch.device,
             out_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One output tensor in `out_dtype`; large tensors of elementwise methods piece by piece into
    the output buffer, so the inputs are never all held whole."""
    pieces = _pieces(task, plan.method, device, readers)
    if pieces is None:
        inputs, base = _load(readers, task, device)
        return merge_tensor(task, inputs, base, method=plan.method, device=device, consume=True).to(out_dtype)
    out = CENSUS.track(torch.empty(task.shape, dtype=out_dtype))
    for a, b in pieces:
        inputs, base = _load(readers, task, device, (a, b))
        out[a:b] = merge_tensor(task, inputs, base, method=plan.method, device=device, consume=True)
        del inputs, base
    return out


def compute_tensors(recipe: Recipe, names: list[str], device: str = "cpu") -> dict[str, torch.Tensor]:
    """Recompute only the named output tensors (float32, on CPU): what a verifier spot-checks."""
    readers: dict[str, ModelReader] = {}
    plan = plan_merge(recipe, readers)
    dev = pick_device(device)
    try:
        return {name: _compute(readers, plan, plan.task(name), dev).cpu() for name in names}
    finally:
        for r in readers.values():
            r.close()


def check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise MergeInputError(f"output folder {out_dir} already exists and is not empty; "
                              "choose another -o or remove it")
    for parent in out_dir.parents:  # the first existing ancestor must be a folder we can write into
        if parent.exists():
            if not parent.is_dir():
                raise MergeInputError(f"cannot create output folder {out_dir}: {parent} is a file")
            break


def _task_bytes(task: TensorTask, method: MergeMethod, device: torch.device, readers: dict[str, ModelReader]) -> int:
    """Upper bound on the float32 bytes one task holds: its inputs, the output and one scratch
    copy; merged in pieces, the whole output and that much per piece."""
    n_in = len(task.inputs) + (task.base is not None)
    n = math.prod(task.shape)
    pieces = _pieces(task, method, device, readers)
    if pieces is not None:
        largest = max(b - a for a, b in pieces) * (n // task.shape[0])  # one row may exceed PIECE_ELEMENTS
        return (n + (n_in + 2) * largest) * FLOAT32_BYTES
    return (n_in + 2) * n * FLOAT32_BYTES


def _stream(plan: MergePlan, readers: dict[str, ModelReader], writer: ShardedWriter,
            layout: list[tuple[str, tuple[int, ...], torch.dtype]], dev: torch.device,
            progress: Callable[[int, int], None] | None) -> None:
    """The loop itself: tasks computed on COMPUTE_THREADS threads (one on a GPU), written in order."""
    def compute(i: int) -> torch.Tensor:
        return _compute(readers, plan, plan.tasks[i], dev, layout[i][2])

    costs = [_task_bytes(t, plan.method, dev, readers) for t in plan.tasks]
    budget = max(costs, default=0)  # in flight: never more than the largest task alone would hold
    threads = COMPUTE_THREADS if dev.type == "cpu" else 1
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="merge-compute")
    pending: deque[Future[torch.Tensor]] = deque()
    admitted = held = 0
    try:
        for i in range(len(plan.tasks)):
            while admitted < len(plan.tasks) and len(pending) < 2 * threads and (
                    not pending or held + costs[admitted] <= budget):
                pending.append(pool.submit(compute, admitted))
                held += costs[admitted]
                admitted += 1
            out = pending.popleft().result()
            writer.write(plan.tasks[i].name, out)
            del out
            held -= costs[i]
            if progress:
                progress(i + 1, len(plan.tasks))
        writer.finish()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        writer.abort()


def run_merge(recipe: Recipe, out_dir: Path | str, *, device: str = "auto", out_dtype: str | None = None,
              shard_size: int = DEFAULT_SHARD_SIZE, progress: Callable[[int, int], None] | None = None,
              inputs: Mapping[str, str] | Callable[[], Mapping[str, str]] | None = None,
              card_recipe: Recipe | None = None,
              version: str = "", license: str | None = None, copy_tokenizer: bool = True) -> MergeResult:
    """Run `recipe` and place a loadable HF folder at `out_dir` atomically (refuses a non-empty one).

    The model card records `card_recipe` (default: `recipe`; the CLI passes the recipe as the user
    wrote it, with model ids rather than the scratch folders they were materialized into) and
    `inputs` (model reference → registry id or digest), or a callable returning them, called when
    the card is written (so a caller can hash the inputs while the merge runs), and `license`
    (SPDX) for the card's Hub metadata. `copy_tokenizer=False` writes no tokenizer files unless
    the recipe builds a tokenizer (mergekit's --no-copy-tokenizer).
    """
    out_dir = Path(out_dir).resolve()
    check_out_dir(out_dir)
    requested = requested_dtype(recipe, out_dtype)
    dev = pick_device(device)
    start = time.perf_counter()
    readers: dict[str, ModelReader] = {}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        plan = plan_merge(recipe, readers)
        layout = tensor_layout(plan, requested)
        writer = ShardedWriter(tmp, layout, shard_size)
        CENSUS.reset_peak()
        _stream(plan, readers, writer, layout, dev, progress)
        for name, data in config_files(plan, requested, copy_tokenizer).items():
            (tmp / name).write_bytes(data)
        idents = inputs() if callable(inputs) else inputs
        (tmp / CARD_FILE).write_bytes(card_bytes(card_recipe or recipe, idents, dev.type, version, license))
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked above): replaced by the finished folder
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        for r in readers.values():
            r.close()
    seconds = time.perf_counter() - start
    log.info("merged %d tensors into %s in %.1fs on %s", len(plan.tasks), out_dir, seconds, dev)
    return MergeResult(out_dir, len(plan.tasks), writer.bytes_written, seconds, dev.type)


def recipe_summary(result: MergeResult) -> dict[str, Any]:
    """JSON-ready view of a result (what `mergenet merge --json` prints)."""
    return {"out": str(result.out_dir), "tensors": result.n_tensors, "bytes": result.bytes_written,
            "seconds": round(result.seconds, 3), "device": result.device}
