"""Step 3b: train the target on λ·LM loss + (1−λ)·cross-entropy to the fused distributions.

Both losses are taken on response tokens only. An epoch ends with a checkpoint in the work dir
(weights through `save_pretrained` as safetensors, AdamW moments as safetensors, a JSON state),
and a restarted run resumes after the last completed epoch with the same shuffling and dropout
seeds, so an interrupted fusion converges to the same weights as an uninterrupted one.

    outcome = train_target(model, cap, fused, settings, work / "train", key, device="cpu")
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from merge.fusion.capture import Capture, load_model, pad_batch
from merge.fusion.fuse import Fused

log = logging.getLogger(__name__)

EVAL_SEQUENCES = 128  # before/after metrics look at this many sequences: cheap, and enough to see a trend
STATE_FILE = "state.json"


@dataclass(frozen=True)
class TrainSettings:
    lr: float
    epochs: int
    batch_size: int
    lm_loss_weight: float
    seed: int


@dataclass(frozen=True)
class Metrics:
    """Mean per response token: LM cross-entropy and KL(fused ‖ model)."""

    lm_loss: float
    fused_kl: float


@dataclass(frozen=True)
class TrainOutcome:
    before: Metrics
    after: Metrics
    steps: int
    tokens: int  # non-padding tokens fed through forward and backward in this run
    seconds: float
    resumed_from_epoch: int

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T)
    rows: torch.Tensor  # (N,) batch row of each response token
    positions: torch.Tensor  # (N,) position whose logits predict that token
    gold: torch.Tensor  # (N,) the token
    fused_ids: torch.Tensor  # (N, K)
    fused_probs: torch.Tensor  # (N, K)

    def to(self, device: str) -> Batch:
        return Batch(*(getattr(self, f).to(device) for f in Batch.__dataclass_fields__))


def make_batch(cap: Capture, fused: Fused, seqs: Sequence[int]) -> Batch:
    resp = cap.resp_offsets()
    ids, mask = pad_batch([cap.sequence_ids(s).tolist() for s in seqs], pad_id=0)
    rows, positions, gold, f_rows = [], [], [], []
    for b, s in enumerate(seqs):
        plen, n = int(cap.prompt_lens[s]), int(cap.seq_offsets[s + 1] - cap.seq_offsets[s])
        rows.append(torch.full((n - plen,), b, dtype=torch.int64))
        positions.append(torch.arange(plen - 1, n - 1))
        gold.append(cap.sequence_ids(s)[plen:])
        f_rows.append(torch.arange(int(resp[s]), int(resp[s + 1])))
    f_idx = torch.cat(f_rows)
    return Batch(ids, mask, torch.cat(rows), torch.cat(positions), torch.cat(gold),
                 fused.ids[f_idx], fused.probs[f_idx])


def losses(model: Any, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(LM cross-entropy, cross-entropy to fused, log-probs) averaged over response tokens."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    logp = torch.log_softmax(logits[batch.rows, batch.positions].float(), dim=-1)  # (N, V)
    lm = -logp.gather(1, batch.gold[:, None]).mean()
    to_fused = -(batch.fused_probs * logp.gather(1, batch.fused_ids)).sum(dim=1).mean()
    return lm, to_fused, logp


def measure(model: Any, cap: Capture, fused: Fused, batch_size: int, device: str,
             limit: int = EVAL_SEQUENCES) -> Metrics:
    """LM loss and KL(fused ‖ model) per response token over the first `limit` sequences."""
    model.eval()
    lm_sum, kl_sum, count = 0.0, 0.0, 0
    seqs = list(range(min(limit, cap.n_seqs)))
    with torch.inference_mode():
        for start in range(0, len(seqs), batch_size):
            batch = make_batch(cap, fused, seqs[start:start + batch_size]).to(device)
            lm, to_fused, logp = losses(model, batch)
            # Ids may repeat within a row (two source tokens mapped to one target token): merge them
            # into a dense row before taking the entropy.
            q = torch.zeros_like(logp).scatter_add_(1, batch.fused_ids, batch.fused_probs)
            entropy = -(q * torch.log(q.clamp(min=1e-30))).sum(dim=1).mean()
            n = int(batch.gold.numel())
            lm_sum += float(lm) * n
            kl_sum += float(to_fused - entropy) * n
            count += n
    return Metrics(lm_loss=lm_sum / max(count, 1), fused_kl=kl_sum / max(count, 1))


def train_target(target_dir: Path, cap: Capture, fused: Fused, settings: TrainSettings, ckpt_dir: Path,
                 key: str, device: str = "cpu",
                 progress: Callable[[int, int], None] | None = None) -> tuple[Any, TrainOutcome]:
    """Train (resuming from `ckpt_dir` when it holds a checkpoint with the same key); returns the
    trained model and what happened."""
    ckpt_dir = Path(ckpt_dir)
    done_epochs, source, saved_before = _resume_point(ckpt_dir, key)
    model = load_model(source if source else target_dir, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr)
    if source:
        _load_optimizer(optimizer, source / "optimizer.safetensors", device)
        log.info("resuming fusion training after epoch %d from %s", done_epochs, source)
    # A resumed run reports the metrics of the untrained target, saved with the first checkpoint.
    before = saved_before or measure(model, cap, fused, settings.batch_size, device)
    per_epoch = -(-cap.n_seqs // settings.batch_size)
    total_steps, step, tokens = settings.epochs * per_epoch, done_epochs * per_epoch, 0
    t0 = time.perf_counter()
    for epoch in range(done_epochs, settings.epochs):
        model.train()
        torch.manual_seed(settings.seed + epoch)  # dropout; per epoch, so a resumed run matches
        order = torch.randperm(cap.n_seqs, generator=torch.Generator().manual_seed(settings.seed + epoch)).tolist()
        for start in range(0, len(order), settings.batch_size):
            batch = make_batch(cap, fused, order[start:start + settings.batch_size]).to(device)
            lm, to_fused, _ = losses(model, batch)
            loss = settings.lm_loss_weight * lm + (1.0 - settings.lm_loss_weight) * to_fused
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            tokens += int(batch.attention_mask.sum())
            if progress:
                progress(step, total_steps)
        _save_checkpoint(model, optimizer, ckpt_dir, epoch + 1, key, before)
    seconds = time.perf_counter() - t0
    after = measure(model, cap, fused, settings.batch_size, device)
    return model, TrainOutcome(before=before, after=after, steps=step, tokens=tokens, seconds=seconds,
                               resumed_from_epoch=done_epochs)


def _resume_point(ckpt_dir: Path, key: str) -> tuple[int, Path | None, Metrics | None]:
    state_path = ckpt_dir / STATE_FILE
    if not state_path.is_file():
        return 0, None, None
    state = json.loads(state_path.read_text())
    folder = ckpt_dir / state.get("checkpoint", "")
    if state.get("key") != key or not (folder / "config.json").is_file():
        return 0, None, None
    return int(state["epochs_done"]), folder, Metrics(**state["before"])


def _save_checkpoint(model: Any, optimizer: torch.optim.Optimizer, ckpt_dir: Path, epochs_done: int,
                     key: str, before: Metrics) -> None:
    """Write the epoch's folder completely, then point state.json at it (atomic replace)."""
    name = f"epoch-{epochs_done}"
    tmp = ckpt_dir / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tensors, groups = _optimizer_tensors(optimizer)
    save_file(tensors, str(tmp / "optimizer.safetensors"), metadata={"param_groups": json.dumps(groups)})
    shutil.rmtree(ckpt_dir / name, ignore_errors=True)
    tmp.rename(ckpt_dir / name)
    state_tmp = ckpt_dir / f".{STATE_FILE}.tmp"
    state_tmp.write_text(json.dumps({"key": key, "epochs_done": epochs_done, "checkpoint": name,
                                     "before": dataclasses.asdict(before)}))
    state_tmp.replace(ckpt_dir / STATE_FILE)
    for old in ckpt_dir.glob("epoch-*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """AdamW state as flat safetensors entries `<param index>.<name>` (never torch.save/pickle)."""
    state = optimizer.state_dict()
    tensors = {f"{idx}.{name}": value.detach().cpu().contiguous()
               for idx, entry in state["state"].items() for name, value in entry.items()
               if isinstance(value, torch.Tensor)}
    return tensors, state["param_groups"]


def _load_optimizer(optimizer: torch.optim.Optimizer, path: Path, device: str) -> None:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        groups = json.loads((fh.metadata() or {})["param_groups"])
    state: dict[int, dict[str, torch.Tensor]] = {}
    for flat, value in load_file(str(path), device="cpu").items():
        idx, name = flat.split(".", 1)
        # AdamW keeps `step` on the CPU unless it runs a fused/capturable kernel.
        state.setdefault(int(idx), {})[name] = value if name == "step" else value.to(device)
    optimizer.load_state_dict({"state": state, "param_groups": groups})
