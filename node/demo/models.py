"""Tiny, deterministic Hugging Face models and tokenizers, generated on the fly.

Nothing is downloaded: tokenizers are trained with `tokenizers` on seeded synthetic text and
models are randomly initialised from small Llama / Qwen2 / GPT-2 configs. Used by
`mergenet demo`, the tests and the benchmarks.

    tok = make_tokenizer(tmp / "tok", kind="bpe")
    base, experts = make_family(tmp / "fam", arch="llama", n_experts=2)
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

ARCHS = ("llama", "qwen2", "gpt2")
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>")
WORDS = (
    "the", "model", "merges", "experts", "layer", "by", "layer", "and", "the", "network",
    "verifies", "every", "tensor", "add", "multiply", "sum", "product", "answer", "question",
    "reason", "step", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    "ten", "zero", "plus", "times", "equals", "result", "number", "digit", "carry", "weight",
    "density", "sign",
)


def synthetic_corpus(n_lines: int = 2000, seed: int = 0) -> list[str]:
    """Arithmetic facts and word salad: enough structure for a tokenizer to learn merges."""
    rng = random.Random(seed)
    lines = []
    for i in range(n_lines):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        if i % 3 == 0:
            lines.append(f"{a}+{b}={a + b}")
        elif i % 3 == 1:
            lines.append(f"{a}*{b}={a * b}")
        else:
            lines.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))))
    return lines


def make_tokenizer(out_dir: Path, kind: str = "bpe", vocab_size: int = 384, seed: int = 0) -> Path:
    """Train and save a fast tokenizer. `bpe`: byte-level BPE (word boundary `Ġ`);
    `char`: one token per character with a sentencepiece-style `▁` boundary marker."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = synthetic_corpus(seed=seed)
    if kind == "bpe":
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
        )
    elif kind == "char":
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        # A vocabulary no larger than the alphabet leaves BPE no room for merges: pure characters.
        alphabet = sorted({c for line in corpus for c in line.replace(" ", "▁")} | {"▁"})
        trainer = trainers.BpeTrainer(
            vocab_size=len(alphabet) + len(SPECIAL_TOKENS), special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=alphabet, show_progress=False,
        )
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}; expected 'bpe' or 'char'")
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>",
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out_dir)
    return out_dir


@dataclass(frozen=True)
class TinySpec:
    """Shape of a tiny model; defaults give ~100k parameters."""

    n_layers: int = 2
    hidden: int = 32
    heads: int = 4
    intermediate: int = 64
    max_positions: int = 128


def _config(arch: str, vocab: int, spec: TinySpec, tok) -> object:
    from transformers import GPT2Config, LlamaConfig, Qwen2Config

    ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
           "pad_token_id": tok.pad_token_id}
    if arch == "llama":
        return LlamaConfig(vocab_size=vocab, hidden_size=spec.hidden, intermediate_size=spec.intermediate,
                           num_hidden_layers=spec.n_layers, num_attention_heads=spec.heads,
                           num_key_value_heads=spec.heads, max_position_embeddings=spec.max_positions,
                           tie_word_embeddings=False, **ids)
    if arch == "qwen2":
        return Qwen2Config(vocab_size=vocab, hidden_size=spec.hidden, intermediate_size=spec.intermediate,
                           num_hidden_layers=spec.n_layers, num_attention_heads=spec.heads,
                           num_key_value_heads=max(1, spec.heads // 2),
                           max_position_embeddings=spec.max_positions, tie_word_embeddings=False, **ids)
    if arch == "gpt2":
        return GPT2Config(vocab_size=vocab, n_embd=spec.hidden, n_layer=spec.n_layers, n_head=spec.heads,
                          n_inner=spec.intermediate, n_positions=spec.max_positions, **ids)
    raise ValueError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCHS)}")


def make_model(out_dir: Path, arch: str = "llama", seed: int = 0, tokenizer_dir: Path | None = None,
               spec: TinySpec = TinySpec()) -> Path:
    """Save a randomly initialised tiny causal LM (safetensors) with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out_dir = Path(out_dir)
    if tokenizer_dir is None:
        tokenizer_dir = make_tokenizer(out_dir.parent / f"{out_dir.name}-tokenizer", seed=seed)
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(_config(arch, len(tok), spec, tok))
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    return out_dir


def perturb_model(src: Path, out_dir: Path, seed: int, scale: float = 0.02, density: float = 0.5) -> Path:
    """Copy a model folder with a seeded sparse delta added to every float tensor: a stand-in
    for fine-tuning, so that task vectors relative to `src` are meaningful."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    src, out_dir = Path(src), Path(out_dir)
    shutil.copytree(src, out_dir, ignore=shutil.ignore_patterns("*.safetensors", "mergenet.json", "model.sig"))
    gen = torch.Generator().manual_seed(seed)
    for shard in sorted(src.glob("*.safetensors")):
        tensors = load_file(str(shard))
        out = {}
        for name in sorted(tensors):
            t = tensors[name]
            if t.is_floating_point():
                delta = torch.randn(t.shape, generator=gen) * scale
                keep = torch.rand(t.shape, generator=gen) < density
                t = (t.float() + delta * keep).to(t.dtype)
            out[name] = t.contiguous()
        save_file(out, str(out_dir / shard.name), metadata={"format": "pt"})
    return out_dir


def make_family(root: Path, arch: str = "llama", n_experts: int = 2, seed: int = 0,
                spec: TinySpec = TinySpec()) -> tuple[Path, list[Path]]:
    """A base model and `n_experts` experts fine-tuned from it (seeded sparse deltas)."""
    root = Path(root)
    tok = make_tokenizer(root / "tokenizer", seed=seed)
    base = make_model(root / "base", arch=arch, seed=seed, tokenizer_dir=tok, spec=spec)
    experts = [perturb_model(base, root / f"expert{i + 1}", seed=seed * 1000 + i + 1) for i in range(n_experts)]
    return base, experts
