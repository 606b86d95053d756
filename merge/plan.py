"""From a recipe and the inputs' headers to an ordered list of per-tensor merge tasks.

    plan = plan_merge(recipe)
    for task in plan.tasks: ...   # output name, source tensors, resolved parameters, layer

Second step of the pipeline (recipe → plan → method → executor → writer). Only headers are
read. A `models:` recipe is one slice covering every layer of every model (the base is added
when the method uses it and the recipe did not list it), as in mergekit. Layers are found by
the `<prefix>.<index>.<rest>` pattern of HF checkpoints (`model.layers.3.`, `transformer.h.3.`);
output layer j of a slice reads layer `layer_range[0] + j` of every source and gets the
gradient position t = j/(n−1) (1 for a one-layer slice); other tensors get t = 0, embeddings
planned from the first slice and the rest from the last.

Vocabulary: with tokenizer settings (`tokenizer_source` or `tokenizer:`), the output vocabulary
is built as mergekit builds it (merge.tokenizer) and every embedding / lm_head row is aligned by
token before merging; without them, inputs whose vocabularies differ are an error that names the
setting to add, as in mergekit 0.1.5. Any other shape or name difference is an
IncompatibleModelsError naming the first differing tensor. `model+adapter` inputs are read
through merge.lora, with the adapter applied.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from merge.errors import IncompatibleModelsError, RecipeError
from merge.io import ModelReader
from merge.lora import open_reader, split_ref
from merge.methods import METHODS, MergeMethod, ParamSpec
from merge.params import coerce, lookup
from merge.recipe import Recipe, Slice, SliceSource
from merge.tokenizer.build import OutputVocab, build_vocab
from merge.tokenizer.chat import resolve_template
from merge.tokenizer.embed import VocabAlignment, plan_alignment
from merge.tokenizer.vocab import ModelVocab, load_vocab

LAYER_RE = re.compile(r"^(?P<prefix>(?:.*\.)?(?:layers|h|blocks|layer))\.(?P<index>\d+)\.(?P<rest>.+)$")
VOCAB_RE = re.compile(r"embed_tokens|embed_in|embed_out|wte|lm_head|word_embeddings|(^|\.)output\.weight$")
PRE_RE = re.compile(r"embed|wte|wpe")
LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers")


@dataclass(frozen=True)
class Source:
    """One tensor of one input model (`model` is a local folder path)."""

    model: str
    tensor: str


@dataclass(frozen=True)
class TensorTask:
    """Everything needed to compute one output tensor."""

    name: str
    inputs: tuple[Source, ...]
    base: Source | None
    model_params: tuple[dict[str, Any], ...]
    global_params: dict[str, Any]
    layer: int | None
    t: float
    shape: tuple[int, ...]
    dtype: str
    mergeable: bool = True
    vocab: VocabAlignment | None = None  # set when embedding rows are re-indexed to the output vocabulary
    seed: int = 0


@dataclass(frozen=True)
class MergePlan:
    recipe: Recipe
    method: MergeMethod
    tasks: list[TensorTask]
    config_model: str
    tokenizer_model: str
    n_layers: int
    vocab_rows: int | None = None
    models: tuple[str, ...] = field(default_factory=tuple)
    layer_sources: tuple[int, ...] = ()  # output layer j is built from layer layer_sources[j] of its sources
    vocab: OutputVocab | None = None  # with tokenizer settings: the output vocabulary
    chat_template: str | None = None  # the Jinja template to write, when the recipe sets one

    def task(self, name: str) -> TensorTask:
        for t in self.tasks:
            if t.name == name:
                return t
        raise RecipeError(f"the merge produces no tensor {name}")


def layer_count(reader: ModelReader) -> int:
    cfg = reader.config()
    for key in LAYER_COUNT_KEYS:
        if isinstance(cfg.get(key), int):
            return cfg[key]
    found = [int(m["index"]) for n in reader.names() if (m := LAYER_RE.match(n))]
    return max(found) + 1 if found else 0


def split_layer(name: str) -> tuple[str, int, str] | None:
    m = LAYER_RE.match(name)
    return (m["prefix"], int(m["index"]), m["rest"]) if m else None


class _Planner:
    def __init__(self, recipe: Recipe, readers: dict[str, ModelReader]) -> None:
        self.recipe = recipe
        self.method = METHODS[recipe.merge_method]
        self.readers = readers
        self.tasks: list[TensorTask] = []
        self.seed = coerce(lookup("random_seed", [recipe.parameters], "", 0.0) or 0, int, "parameters.random_seed")
        self.spec = recipe.tokenizer_spec
        self.out_vocab: OutputVocab | None = None
        self.vocabs: dict[str, ModelVocab] = {}
        self.alignments: dict[tuple[tuple[str, ...], str | None], VocabAlignment] = {}

    def reader(self, model: str) -> ModelReader:
        if model not in self.readers:
            self.readers[model] = open_reader(model)
        return self.readers[model]

    def vocab(self, model: str) -> ModelVocab:
        if model not in self.vocabs:
            self.vocabs[model] = load_vocab(split_ref(model)[0])
        return self.vocabs[model]

    def build_vocab(self, slices: tuple[Slice, ...], base: str) -> OutputVocab:
        """The output vocabulary from the base, every input and the tokenizer source model."""
        refs = [base] + [s.model for sl in slices for s in sl.sources]
        if self.spec.source_model:
            refs.append(self.spec.source_model)
        vocabs = {}
        for ref in dict.fromkeys(refs):
            vocabs.setdefault(self.vocab(ref).folder, self.vocab(ref))
        return build_vocab(self.spec, self.vocab(base).folder, vocabs)

    def alignment(self, models: tuple[str, ...], base: str | None) -> VocabAlignment:
        key = (models, base)
        if key not in self.alignments:
            self.alignments[key] = plan_alignment(self.out_vocab, [(m, self.vocab(m)) for m in models], base, self.spec)
        return self.alignments[key]

    def slices(self) -> tuple[Slice, ...]:
        if self.recipe.slices:
            return self.recipe.slices
        sources = [SliceSource(m.model, (0, layer_count(self.reader(m.model))), m.parameters)
                   for m in self.recipe.models]
        base = self.recipe.base_model
        m = self.method
        if (m.needs_base or m.base_optional or m.base_as_input) and base and base not in {s.model for s in sources}:
            sources.append(SliceSource(base, (0, layer_count(self.reader(base)))))
        return (Slice(tuple(sources)),)

    def split(self, sl: Slice, where: str) -> tuple[SliceSource | None, list[SliceSource]]:
        """(base source, other sources) of a slice, checked against the method's needs."""
        base_ref = sl.base_model or self.recipe.base_model
        base, others = None, list(sl.sources)
        if self.method.needs_base or (self.method.base_optional and base_ref):
            matches = [s for s in sl.sources if s.model == base_ref]
            if not matches:
                raise RecipeError(f"{where}: base_model {base_ref} must be one of the slice's sources")
            base = matches[0]
            others = [s for s in sl.sources if s is not base]
        lo, hi = self.method.min_inputs, self.method.max_inputs
        if len(others) < lo or (hi is not None and len(others) > hi):
            want = f"exactly {lo}" if lo == hi else f"at least {lo}" if hi is None else f"{lo}–{hi}"
            extra = " besides the base model" if base else ""
            raise RecipeError(f"{where}: {self.method.name} needs {want} input model(s){extra}, got {len(others)}")
        return base, others

    def params(self, sl: Slice, others: list[SliceSource], out_name: str, in_names: list[str],
               t: float) -> tuple[tuple[dict[str, Any], ...], dict[str, Any]]:
        gscopes = [sl.parameters, self.recipe.parameters]
        gparams = {}
        for p in self.method.params:
            if not p.per_model:
                gparams[p.name] = self.resolve(p, gscopes, out_name, t, "the recipe")
        mparams = []
        for src, in_name in zip(others, in_names, strict=True):
            scopes = [src.parameters, sl.parameters, self.recipe.parameters]
            mparams.append({p.name: self.resolve(p, scopes, in_name, t, f"model {src.model}")
                            for p in self.method.params if p.per_model})
        return tuple(mparams), gparams

    def resolve(self, spec: ParamSpec, scopes: list[dict[str, Any]], tensor: str, t: float, who: str) -> Any:
        value = lookup(spec.name, scopes, tensor, t, spec.kind)
        if value is None:
            if spec.required:
                raise RecipeError(f"{self.method.name} needs parameter '{spec.name}' for {who} "
                                  f"(tensor {tensor}); add it to that model's parameters or the global parameters")
            return spec.default
        return coerce(value, spec.kind, f"parameter '{spec.name}' for {who} (tensor {tensor})")

    def add(self, sl: Slice, where: str, out_name: str, in_names: list[str], layer: int | None, t: float) -> None:
        base, others = self.split(sl, where)
        srcs = ([base] if base else []) + others
        names = dict(zip([id(s) for s in sl.sources], in_names, strict=True))
        infos = []
        for s in srcs:
            r = self.reader(s.model)
            if not r.has(names[id(s)]):
                have = next(x for x in srcs if self.reader(x.model).has(names[id(x)]))
                raise IncompatibleModelsError(
                    f"model {s.model} has no tensor {names[id(s)]} (model {have.model} has it): "
                    "the models have different architectures and cannot be merged")
            infos.append(r.info(names[id(s)]))
        ref = infos[0]
        vocab_axis = VOCAB_RE.search(ref.name) is not None and ref.is_float
        for s, info in zip(srcs, infos, strict=True):
            same = info.shape[1:] == ref.shape[1:] if vocab_axis and self.spec else info.shape == ref.shape
            if same and len(info.shape) == len(ref.shape):
                continue
            if vocab_axis and len(info.shape) == len(ref.shape) and info.shape[1:] == ref.shape[1:]:
                raise IncompatibleModelsError(
                    f"tensor {info.name} has {info.shape[0]} rows in {s.model} but {ref.shape[0]} in {srcs[0].model}: "
                    "the models' vocabularies differ; add `tokenizer: {source: base}` (keep the base's vocabulary) "
                    "or `tokenizer_source: union` (every input's tokens) to the recipe to align them by token")
            raise IncompatibleModelsError(
                f"tensor {info.name} has shape {list(info.shape)} in {s.model} but {list(ref.shape)} in "
                f"{srcs[0].model}: the models have different architectures and cannot be merged")
        shape, vocab = ref.shape, None
        if vocab_axis and self.spec:
            vocab = self.alignment(tuple(s.model for s in srcs), sl.base_model or self.recipe.base_model)
            shape = (vocab.rows, *ref.shape[1:])
            if vocab.is_identity([i.shape[0] for i in infos]):
                vocab = None
        mparams, gparams = self.params(sl, others, out_name, [names[id(s)] for s in others], t)
        self.tasks.append(TensorTask(
            name=out_name, inputs=tuple(Source(s.model, names[id(s)]) for s in others),
            base=Source(base.model, names[id(base)]) if base else None, model_params=mparams,
            global_params=gparams, layer=layer, t=t, shape=shape, dtype=ref.dtype,
            mergeable=all(i.is_float for i in infos), vocab=vocab, seed=self.seed,
        ))

    def plan(self) -> MergePlan:
        slices = self.slices()
        first, last = slices[0], slices[-1]
        config_ref = self.recipe.base_model or first.sources[0].model
        config_model = split_ref(config_ref)[0]
        tokenizer_model = config_model
        if self.spec is not None:
            self.out_vocab = self.build_vocab(slices, config_ref)
            tokenizer_model = str(self.out_vocab.source)
        template = self.reader(config_ref)
        self.check_same_names(slices)
        flat = [n for n in template.names() if split_layer(n) is None]
        pre = [n for n in flat if PRE_RE.search(n)]
        post = [n for n in flat if not PRE_RE.search(n)]
        for n in pre:
            self.add(first, "slices[0]", n, [n] * len(first.sources), None, 0.0)
        out_layer, layer_sources = 0, []
        for i, sl in enumerate(slices):
            count = sl.sources[0].layer_range[1] - sl.sources[0].layer_range[0]
            for j in range(count):
                t = j / (count - 1) if count > 1 else 1.0
                lead = sl.sources[0]
                lead_names = [n for n in self.reader(lead.model).names()
                              if (p := split_layer(n)) and p[1] == lead.layer_range[0] + j]
                if not lead_names:
                    raise RecipeError(f"slices[{i}]: model {lead.model} has no layer {lead.layer_range[0] + j}")
                for n in lead_names:
                    prefix, _, rest = split_layer(n)
                    in_names = [f"{prefix}.{s.layer_range[0] + j}.{rest}" for s in sl.sources]
                    self.add(sl, f"slices[{i}]", f"{prefix}.{out_layer}.{rest}", in_names, out_layer, t)
                out_layer += 1
                layer_sources.append(lead.layer_range[0] + j)
        for n in post:
            self.add(last, f"slices[{len(slices) - 1}]", n, [n] * len(last.sources), None, 0.0)
        models = tuple(dict.fromkeys([s.model for sl in slices for s in sl.sources]))
        template_models = [Path(split_ref(m)[0]) for m in dict.fromkeys([config_ref, *models])]
        return MergePlan(self.recipe, self.method, self.tasks, config_model, tokenizer_model, out_layer,
                         self.out_vocab.rows if self.out_vocab else None, models, tuple(layer_sources),
                         self.out_vocab, resolve_template(self.recipe.chat_template, template_models))

    def check_same_names(self, slices: tuple[Slice, ...]) -> None:
        """Whole-model merges: every input must have the same tensor names as the first."""
        if self.recipe.slices:
            return
        models = [s.model for s in slices[0].sources]
        first = set(self.reader(models[0]).names())
        for m in models[1:]:
            other = set(self.reader(m).names())
            diff = sorted(first ^ other)
            if diff:
                has, lacks = (models[0], m) if diff[0] in first else (m, models[0])
                raise IncompatibleModelsError(
                    f"model {lacks} has no tensor {diff[0]} (model {has} has it): "
                    "the models have different architectures and cannot be merged")


def plan_merge(recipe: Recipe, readers: dict[str, ModelReader] | None = None) -> MergePlan:
    """Plan `recipe` (model references must be local folders). `readers` caches opened models."""
    return _Planner(recipe, readers if readers is not None else {}).plan()
