""" Evaluation: retrieval / re-ID metrics, compatibility reports and the `evaluate` metric module. """
from pathlib import Path

from .compat_report import (
    diagonal_and_cross_width_means, format_compatibility_table, parameter_share_label, plot_compatibility_heatmap,
    summarize_compatibility,
)
from .retrieval import rank_metrics_from_distances, retrieval_metrics

# `evaluate.load(METRIC_PATH)` loads the metric shipped in this package, without network access
METRIC_PATH = str(Path(__file__).resolve().parent / 'metric' / 'sfsc_retrieval.py')

# ---- compatibility matrix (sfsc_timm/eval/compatibility.py, maintained separately) ----
from .compatibility import (  # noqa: E402
    CompatibilityResult, Embeddings, compatibility_from_embeddings, compatibility_matrix, extract_embeddings,
)
