"""Tiny models shaped like real checkpoints, for seven architectures, with real-style tokenizers.

node/demo/models.py gives every tokenizer a `<pad>` token and sizes every embedding to the
tokenizer exactly; real checkpoints do neither, and that hid bugs. Here each architecture gets
the tokenizer layout of its real family and the config quirks that matter to merging and eval:

    arch      tokenizer (built offline with `tokenizers`)               shapes that matter
    llama     llama3-style byte-level BPE, no pad, BOS added, chat ids   vocab padded to ×64
    mistral   SentencePiece-style (Metaspace ▁), no pad, [INST] tokens   sliding_window set
    qwen2     qwen2-style byte-level BPE, no BOS, pad ≠ eos, chat ids    tied embeddings (no lm_head)
    gemma2    gemma-style Metaspace, pad id 0, <start_of_turn> tokens    tied, softcapping, sliding
    phi3      llama2-style Metaspace + <|endoftext|> as eos and pad      fused qkv_proj / gate_up_proj
    gpt_neox  pythia-style byte-level BPE, <|padding|> but no pad set    fused query_key_value
    gpt2      gpt2-style byte-level BPE, <|endoftext|> only, no pad      Conv1D, tied, exact vocab

Every base model is briefly trained to memorize `FACTS` (so exact-match accuracy is known to
be high and a search has signal); experts are small seeded perturbations of it.

    base, experts = make_family(tmp / "qwen2", "qwen2", n_experts=2)
    tok_dir = make_tokenizer(tmp / "tok", "llama3")
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.demo.models import perturb_model, synthetic_corpus

ARCHS = ("llama", "mistral", "qwen2", "gemma2", "phi3", "gpt_neox", "gpt2")
TIED = frozenset({"qwen2", "gemma2", "gpt2"})
VOCAB_MULTIPLE = 64  # real configs round the embedding up (Llama 3 and Qwen2 to multiples of 64 or 128)
FACTS = {"12+7=": "19", "3*4=": "12", "20+5=": "25", "6*7=": "42", "9+9=": "18", "8*3=": "24"}
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant: {% endif %}")


@dataclass(frozen=True)
class TokenizerStyle:
    """Where a real family puts its special tokens: `leading` ones take the first ids (as in
    SentencePiece models and Pythia), `trailing` ones are appended after the learned vocabulary
    (as in GPT-2, Llama 3, Qwen2). Roles name tokens of those lists; None means the tokenizer
    has no such token."""

    kind: str  # "bytelevel" or "metaspace"
    leading: tuple[str, ...] = ()
    trailing: tuple[str, ...] = ()
    bos: str | None = None
    eos: str | None = None
    unk: str | None = None
    pad: str | None = None
    add_bos: bool = False  # a post-processor prepends BOS, as Llama and Gemma tokenizers do
    learned: int = 64  # merges beyond the alphabet


STYLES: dict[str, TokenizerStyle] = {
    "gpt2": TokenizerStyle("bytelevel", trailing=("<|endoftext|>",), bos="<|endoftext|>", eos="<|endoftext|>",
                           unk="<|endoftext|>"),
    "llama3": TokenizerStyle("bytelevel", trailing=("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                                                    "<|end_header_id|>", "<|eot_id|>"),
                             bos="<|begin_of_text|>", eos="<|end_of_text|>", add_bos=True),
    "qwen2": TokenizerStyle("bytelevel", trailing=("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
                            eos="<|im_end|>", pad="<|endoftext|>"),
    "neox": TokenizerStyle("bytelevel", leading=("<|endoftext|>", "<|padding|>"), bos="<|endoftext|>",
                           eos="<|endoftext|>", unk="<|endoftext|>"),
    "llama2": TokenizerStyle("metaspace", leading=("<unk>", "<s>", "</s>"), trailing=("[INST]", "[/INST]"),
                             bos="<s>", eos="</s>", unk="<unk>", add_bos=True),
    "phi3": TokenizerStyle("metaspace", leading=("<unk>", "<s>", "</s>"),
                           trailing=("<|endoftext|>", "<|assistant|>", "<|user|>", "<|end|>"),
                           bos="<s>", eos="<|endoftext|>", unk="<unk>", pad="<|endoftext|>", add_bos=True),
    "gemma": TokenizerStyle("metaspace", leading=("<pad>", "<eos>", "<bos>", "<unk>"),
                            trailing=("<start_of_turn>", "<end_of_turn>"), bos="<bos>", eos="<eos>", unk="<unk>",
                            pad="<pad>", add_bos=True),
}


@dataclass(frozen=True)
class ArchSpec:
    """One architecture: its tokenizer style and whether its embedding is padded past it."""

    arch: str
    style: str
    pad_vocab: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


SPECS: dict[str, ArchSpec] = {
    "llama": ArchSpec("llama", "llama3"),
    "mistral": ArchSpec("mistral", "llama2"),
    "qwen2": ArchSpec("qwen2", "qwen2"),
    "gemma2": ArchSpec("gemma2", "gemma"),
    "phi3": ArchSpec("phi3", "phi3"),
    "gpt_neox": ArchSpec("gpt_neox", "neox"),
    "gpt2": ArchSpec("gpt2", "gpt2", pad_vocab=False),  # GPT-2's 50257 rows are its tokenizer exactly
}
HIDDEN, LAYERS, HEADS, KV_HEADS, INTERMEDIATE, POSITIONS = 32, 2, 4, 2, 64, 128
SLIDING_WINDOW = 8  # shorter than a prompt plus answer, so the window is really exercised


def corpus(seed: int = 0) -> list[str]:
    return synthetic_corpus(n_lines=600, seed=seed) + [p + a for p, a in FACTS.items()]


def make_tokenizer(out_dir: Path, style: str, seed: int = 0) -> Path:
    """Train and save a fast tokenizer in the layout of a real family (see STYLES)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    st = STYLES[style]
    lines = corpus(seed)
    if st.kind == "bytelevel":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        tok = Tokenizer(models.BPE(unk_token=st.unk))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
        alphabet = sorted({c for line in lines for c in line.replace(" ", "▁")} | {"▁"})
    trainer = trainers.BpeTrainer(vocab_size=len(st.leading) + len(alphabet) + st.learned,
                                  special_tokens=list(st.leading), initial_alphabet=alphabet, show_progress=False)
    tok.train_from_iterator(lines, trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in st.trailing])
    if st.add_bos:
        bos_id = tok.token_to_id(st.bos)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{st.bos} $A", pair=f"{st.bos} $A {st.bos} $B", special_tokens=[(st.bos, bos_id)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=st.bos, eos_token=st.eos, unk_token=st.unk,
                                   pad_token=st.pad, model_max_length=POSITIONS)
    if st.trailing and len(st.trailing) > 1:
        fast.chat_template = CHAT_TEMPLATE
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out_dir)
    return out_dir


def config_for(arch: str, tok: Any) -> Any:
    """A tiny transformers config of `arch` whose special ids come from `tok`."""
    from transformers import (
        Gemma2Config,
        GPT2Config,
        GPTNeoXConfig,
        LlamaConfig,
        MistralConfig,
        Phi3Config,
        Qwen2Config,
    )

    spec = SPECS[arch]
    vocab = len(tok)
    if spec.pad_vocab:
        vocab = (vocab // VOCAB_MULTIPLE + 1) * VOCAB_MULTIPLE  # strictly past the tokenizer
    ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    common = {"vocab_size": vocab, "hidden_size": HIDDEN, "intermediate_size": INTERMEDIATE,
              "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "max_position_embeddings": POSITIONS, **ids}
    if arch == "llama":
        return LlamaConfig(num_key_value_heads=KV_HEADS, tie_word_embeddings=False, **common)
    if arch == "mistral":
        return MistralConfig(num_key_value_heads=KV_HEADS, sliding_window=SLIDING_WINDOW, **common)
    if arch == "qwen2":
        return Qwen2Config(num_key_value_heads=KV_HEADS, tie_word_embeddings=True, **common)
    if arch == "gemma2":
        head_dim = HIDDEN // HEADS
        return Gemma2Config(num_key_value_heads=KV_HEADS, head_dim=head_dim, query_pre_attn_scalar=head_dim,
                            sliding_window=SLIDING_WINDOW, tie_word_embeddings=True, **common)
    if arch == "phi3":
        return Phi3Config(num_key_value_heads=KV_HEADS, original_max_position_embeddings=POSITIONS, **common)
    if arch == "gpt_neox":
        return GPTNeoXConfig(tie_word_embeddings=False, **common)
    if arch == "gpt2":
        return GPT2Config(vocab_size=vocab, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_inner=INTERMEDIATE,
                          n_positions=POSITIONS, **ids)
    raise ValueError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCHS)}")


def memorize(model: Any, tok: Any, facts: dict[str, str], steps: int, lr: float = 1e-2) -> None:
    """A few full-batch AdamW steps on prompt + answer + EOS, tokenized as eval scores them."""
    import torch

    from merge.eval.scoring import encode_pair

    seqs = []
    for prompt, answer in facts.items():
        ctx, cont = encode_pair(tok, prompt, answer)
        seqs.append(ctx + cont + [tok.eos_token_id])
    width = max(map(len, seqs))
    ids = torch.tensor([s + [0] * (width - len(s)) for s in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    labels = ids.masked_fill(mask == 0, -100)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def make_model(out_dir: Path, arch: str, seed: int = 0, tokenizer_dir: Path | None = None,
               train_steps: int = 200) -> Path:
    """Save a tiny `arch` model (safetensors) with its tokenizer; trained on FACTS unless steps=0."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out_dir = Path(out_dir)
    if tokenizer_dir is None:
        tokenizer_dir = make_tokenizer(out_dir.parent / f"{out_dir.name}-tokenizer", SPECS[arch].style, seed=seed)
    config = config_for(arch, AutoTokenizer.from_pretrained(str(tokenizer_dir)))
    # Next to a config, AutoTokenizer picks the family's own tokenizer class, which may rebuild the
    # pre-tokenizer (Qwen2Tokenizer splits digits one by one): train with what eval will load.
    out_dir.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(str(tokenizer_dir)).save_pretrained(out_dir)
    tok = AutoTokenizer.from_pretrained(str(out_dir))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared 2-core machine: torch's spinning threads only slow tiny models
    try:
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
        if train_steps:
            memorize(model, tok, FACTS, train_steps)
    finally:
        torch.set_num_threads(threads)
    model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def make_family(root: Path, arch: str, n_experts: int = 2, seed: int = 0,
                scale: float = 0.002) -> tuple[Path, list[Path]]:
    """A trained base and `n_experts` experts perturbed from it (small enough to keep its answers)."""
    root = Path(root)
    base = make_model(root / "base", arch, seed=seed)
    experts = [perturb_model(base, root / f"expert{i + 1}", seed=seed * 1000 + i + 1, scale=scale)
               for i in range(n_experts)]
    return base, experts


def task_rows(facts: dict[str, str] | None = None) -> list[dict]:
    """Exact-match rows for every fact plus multiple-choice rows with choices of unequal token length."""
    facts = facts or FACTS
    rows: list[dict] = [{"prompt": p, "answer": a, "task": "gen"} for p, a in facts.items()]
    for k, (p, a) in enumerate(facts.items()):
        choices: Sequence[str] = [a, str(int(a) + 3), a + "0", "7"]
        choices = list(choices[k % 4:]) + list(choices[:k % 4])
        rows.append({"prompt": p, "choices": choices, "answer": choices.index(a), "task": "mc"})
    return rows
