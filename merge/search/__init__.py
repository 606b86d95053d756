"""Layer-wise evolutionary merge search (the paper's homogeneous method).

    SearchSpace, Gene              → genome.py     (genes ↔ recipe with per-layer lists)
    CandidateMerger                → candidate.py  (inputs loaded once, merge in memory)
    run_search, SearchConfig, ...  → loop.py       (CMA-ES, log/resume, best recipe + model)
    read_log / append              → runlog.py     (log.jsonl)
    plot_fitness                   → plot.py       (fitness.png)
"""

from merge.search.genome import DENSITY_BOUNDS, WEIGHT_BOUNDS, SearchSpace
from merge.search.loop import SearchConfig, SearchResult, run_search

__all__ = ["DENSITY_BOUNDS", "WEIGHT_BOUNDS", "SearchConfig", "SearchResult", "SearchSpace", "run_search"]
