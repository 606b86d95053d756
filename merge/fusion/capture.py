"""Step 1: run a causal LM over the examples and keep what fusion needs from it.

For every response token we keep the top-k logits and ids of the distribution that predicted it,
and for every sequence the summed cross-entropy of the response; the token ids of the whole
sequence are kept too (alignment needs the response tokens, training the target's full input).

    cap = capture_model(Path("expert"), examples, top_k=10, max_length=512, batch_size=8)
    save_capture(cap, work / "capture-0.safetensors", key="...")
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from merge.errors import MergeInputError
from merge.fusion.data import Example
from merge.fusion.store import load_tensors, save_tensors

log = logging.getLogger(__name__)

PROMPT_SEPARATOR = "\n"
PICKLED_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


@dataclass(frozen=True)
class Encoded:
    """One example as token ids: the prompt tokens, then the response tokens (eos included)."""

    ids: tuple[int, ...]
    prompt_len: int
    n_chars: float  # response characters covered after truncation (for per-character CE)


@dataclass(frozen=True)
class Capture:
    """One model's view of the data. Response rows are in sequence order, sequence by sequence."""

    input_ids: torch.Tensor  # (total tokens,) int64, all sequences concatenated
    seq_offsets: torch.Tensor  # (S + 1,) int64
    prompt_lens: torch.Tensor  # (S,) int64
    topk_ids: torch.Tensor  # (R, k) int64, R = total response tokens
    topk_logits: torch.Tensor  # (R, k) float32
    ce_sum: torch.Tensor  # (S,) float64, nats over each response
    n_chars: torch.Tensor  # (S,) float64

    @property
    def n_seqs(self) -> int:
        return int(self.prompt_lens.numel())

    def resp_offsets(self) -> torch.Tensor:
        """(S + 1,) offsets of each sequence's response rows."""
        lens = self.seq_offsets[1:] - self.seq_offsets[:-1] - self.prompt_lens
        return torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(lens, 0)])

    def response_ids(self, s: int) -> torch.Tensor:
        start, end = int(self.seq_offsets[s]), int(self.seq_offsets[s + 1])
        return self.input_ids[start + int(self.prompt_lens[s]):end]

    def sequence_ids(self, s: int) -> torch.Tensor:
        return self.input_ids[int(self.seq_offsets[s]):int(self.seq_offsets[s + 1])]

    def ce_per_char(self) -> torch.Tensor:
        """Nats per response character: comparable across tokenizers, unlike per-token CE, which
        favours fine-grained tokenizers (a character model's per-token CE is always small)."""
        return self.ce_sum / self.n_chars.clamp(min=1.0)


def check_model_dir(path: Path) -> None:
    """A loadable HF folder with safetensors weights; pickled checkpoints are refused, never loaded."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise MergeInputError(f"model folder {path} has no config.json; give a Hugging Face model folder")
    pickled = sorted(p.name for p in path.iterdir() if p.suffix in PICKLED_SUFFIXES)
    if pickled:
        raise MergeInputError(f"model folder {path} holds pickled weights ({pickled[0]}); only safetensors are "
                              "accepted: convert it to safetensors first")
    if not any(path.glob("*.safetensors")):
        raise MergeInputError(f"model folder {path} has no *.safetensors weights")


def load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as exc:
        raise MergeInputError(f"model folder {path} has no usable tokenizer: {' '.join(str(exc).split())}") from None


def load_model(path: Path, device: str) -> Any:
    from transformers import AutoModelForCausalLM

    check_model_dir(path)
    try:
        # float32 whatever the checkpoint holds (the distillation targets are compared in float32);
        # `.float()` rather than a dtype argument, whose name differs across transformers versions.
        model = AutoModelForCausalLM.from_pretrained(str(path), use_safetensors=True).float()
    except (OSError, ValueError) as exc:
        raise MergeInputError(f"model folder {path} cannot be loaded as a causal LM: "
                              f"{' '.join(str(exc).split())}") from None
    return model.to(device)


def model_max_length(model_or_config: Any, requested: int) -> int:
    """The requested length, capped by the model's position table where it has one."""
    config = getattr(model_or_config, "config", model_or_config)
    limits = [getattr(config, k, None) for k in ("max_position_embeddings", "n_positions")]
    limits = [v for v in limits if isinstance(v, int) and v > 1]
    return min([requested, *limits])


def encode_example(tok: Any, example: Example, max_length: int) -> Encoded:
    """Prompt = instruction + separator (the tokenizer's own specials, e.g. BOS); response tokenized
    on its own so its tokens cover exactly the response text in every tokenizer, then EOS."""
    prompt = list(tok(example.instruction + PROMPT_SEPARATOR, add_special_tokens=True)["input_ids"])
    if not prompt:
        start = next((t for t in (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) if t is not None), None)
        if start is None:
            raise MergeInputError("an example has an empty instruction and the tokenizer has no BOS/EOS token "
                                  "to start from; give every example an instruction")
        prompt = [start]
    response = list(tok(example.response, add_special_tokens=False)["input_ids"])
    full_response = len(response)
    if tok.eos_token_id is not None:
        response.append(tok.eos_token_id)
    # The prompt may use whatever the response leaves, but never more than half the budget when the
    # response needs it; it loses its oldest tokens first.
    prompt = prompt[-max(1, min(len(prompt), max(max_length - len(response), max_length // 2))):]
    response = response[:max_length - len(prompt)]
    kept_text = min(len(response), full_response)
    # EOS counts as one character: it is text the model must predict, in every tokenizer alike.
    n_chars = (len(example.response) * kept_text / full_response if full_response else 0.0) + \
        (1.0 if len(response) > kept_text else 0.0)
    return Encoded(ids=tuple(prompt + response), prompt_len=len(prompt), n_chars=n_chars)


def capture_model(model_dir: Path, examples: Sequence[Example], *, top_k: int, max_length: int,
                  batch_size: int, device: str = "cpu",
                  progress: Callable[[int, int], None] | None = None) -> Capture:
    """Forward the model over every example (no gradients) and keep the response statistics."""
    tok = load_tokenizer(model_dir)
    model = load_model(model_dir, device).eval()
    max_length = model_max_length(model, max_length)
    encoded = [encode_example(tok, ex, max_length) for ex in examples]
    check_ids(tok, encoded, int(model.get_input_embeddings().weight.shape[0]), model_dir)
    k = min(top_k, model.config.vocab_size)
    topk_ids, topk_logits, ce_sum = [], [], []
    with torch.inference_mode():
        for start in range(0, len(encoded), batch_size):
            batch = encoded[start:start + batch_size]
            ids, mask = pad_batch([e.ids for e in batch], pad_id=0)
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
            for row, enc in enumerate(batch):
                # logits at position p predict token p + 1: the response is predicted from prompt_len - 1 on
                pred = logits[row, enc.prompt_len - 1:len(enc.ids) - 1]  # (r, V)
                gold = ids[row, enc.prompt_len:len(enc.ids)].to(pred.device)
                ce_sum.append(torch.nn.functional.cross_entropy(pred, gold, reduction="sum").double().cpu())
                values, idx = pred.topk(k, dim=-1)
                topk_logits.append(values.cpu())
                topk_ids.append(idx.cpu())
            if progress:
                progress(min(start + batch_size, len(encoded)), len(encoded))
    lengths = torch.tensor([len(e.ids) for e in encoded], dtype=torch.int64)
    return Capture(
        input_ids=torch.tensor([t for e in encoded for t in e.ids], dtype=torch.int64),
        seq_offsets=torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(lengths, 0)]),
        prompt_lens=torch.tensor([e.prompt_len for e in encoded], dtype=torch.int64),
        topk_ids=torch.cat(topk_ids).to(torch.int64), topk_logits=torch.cat(topk_logits),
        ce_sum=torch.stack(ce_sum), n_chars=torch.tensor([e.n_chars for e in encoded], dtype=torch.float64),
    )


def check_ids(tok: Any, encoded: Sequence[Encoded], rows: int, model_dir: Path) -> None:
    """Every token id must have an embedding row (a tokenizer can hold added tokens its model was never
    resized for); said here, naming the token, instead of torch's "index out of range in self"."""
    for enc in encoded:
        bad = next((t for t in enc.ids if not 0 <= t < rows), None)
        if bad is not None:
            raise MergeInputError(f"model folder {model_dir}: the tokenizer produced token id {bad} "
                                  f"({tok.convert_ids_to_tokens(bad)!r}) but the embedding has {rows} rows; the "
                                  "tokenizer does not match the model (resize its embeddings or use its own tokenizer)")


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (B, T) ids and attention mask; causal LMs never look right, so padding is inert,
    and real tokens keep the default positions 0..len−1. `pad_id` 0 is a row every embedding has;
    tokenizers without a pad token (GPT-2, Llama) need none."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.int64)
    mask = torch.zeros((len(seqs), width), dtype=torch.int64)
    for row, s in enumerate(seqs):
        ids[row, :len(s)] = torch.tensor(s, dtype=torch.int64)
        mask[row, :len(s)] = 1
    return ids, mask


def save_capture(cap: Capture, path: Path, key: str) -> None:
    """Atomically write a capture as safetensors, tagged with the key of the inputs that made it."""
    save_tensors({name: getattr(cap, name) for name in Capture.__dataclass_fields__}, path, key)


def load_capture(path: Path, key: str) -> Capture | None:
    """The saved capture if it was made from the same inputs (same key), else None."""
    tensors = load_tensors(path, key)
    return None if tensors is None else Capture(**tensors)
