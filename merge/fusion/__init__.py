"""merge.fusion — heterogeneous merging by distribution fusion (FuseLLM / FuseChat).

Sources with different architectures and tokenizers are fused into a target model through their
token distributions on instruction–response data:

    FusionRecipe, load_recipe → recipe.py     (YAML → validated frozen recipe)
    Example, load_examples    → data.py       (JSONL instruction/response pairs)
    capture_model             → capture.py    (step 1: top-k logits + CE per model, saved)
    align_tokens, build_vocab_map, project_capture → align.py (step 2: DTW + vocabulary map)
    fuse, FUSION_FUNCTIONS    → fuse.py       (step 3a: min_ce / avg_ce)
    train_target              → train.py      (step 3b: λ·LM + (1−λ)·CE-to-fused, checkpoints)
    run_fusion, FusionResult  → pipeline.py   (the entry point; restartable, atomic output;
                                               `expected_model_files`: what a verifier compares)
    step_key, save_tensors    → store.py      (keyed step outputs in the work dir)
    model_card, card_pattern  → card.py       (README.md of the output; every card it can write)

    result = run_fusion(load_recipe("fuse.yaml"), Path("out"))
"""

from merge.fusion.pipeline import FusionResult, run_fusion
from merge.fusion.recipe import FusionRecipe, load_recipe

__all__ = ["FusionRecipe", "FusionResult", "load_recipe", "run_fusion"]
