"""merge — what a merge DOES: pure compute over tensors (no network, keys or database).

Pipeline: recipe → tensor plan → method → executor → writer; plus search, fusion and eval.
"""
