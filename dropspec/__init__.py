"""The framework-free specification shared by ``jaxdrop`` and ``torchdrop``.

Everything here is plain Python and NumPy: argument rules and their error messages, the
geometry of blocks and seeds, and the seed-rate calibration in float64. Both packages call it,
so they cannot drift apart in what they accept, what they say when they refuse, or which seed
rate a Python-float ``rate`` becomes. Nothing in this package is public API of its own; users
import ``jaxdrop`` or ``torchdrop``.
"""

from dropspec._calibration import (
    ExactCalibration,
    exact_calibration,
    gamma_from_rate,
    keep_probability_map,
    keep_threshold,
    newton_step_count,
    paper_factor,
    solve_exact_gamma,
)
from dropspec._checks import (
    OPTIONS,
    RANK_RULES,
    check_bool,
    check_bool_dtype,
    check_branch,
    check_broadcastable,
    check_choice,
    check_eps,
    check_fill,
    check_float_dtype,
    check_int_dtype,
    check_non_negative_int,
    check_one_source,
    check_positive_int,
    check_rank,
    check_rate,
    check_shape,
    check_sizes,
    dtype_name,
)
from dropspec._geometry import (
    BlockGeometry,
    block_geometry,
    cover_counts,
    cover_counts_1d,
    dilation_padding,
    drop_path_keep_shape,
    seed_shape,
    split_layout,
)
from dropspec._schedules import depth_rates

__all__ = [
    "OPTIONS",
    "RANK_RULES",
    "BlockGeometry",
    "ExactCalibration",
    "block_geometry",
    "check_bool",
    "check_bool_dtype",
    "check_branch",
    "check_broadcastable",
    "check_choice",
    "check_eps",
    "check_fill",
    "check_float_dtype",
    "check_int_dtype",
    "check_non_negative_int",
    "check_one_source",
    "check_positive_int",
    "check_rank",
    "check_rate",
    "check_shape",
    "check_sizes",
    "cover_counts",
    "cover_counts_1d",
    "depth_rates",
    "dilation_padding",
    "drop_path_keep_shape",
    "dtype_name",
    "exact_calibration",
    "gamma_from_rate",
    "keep_probability_map",
    "keep_threshold",
    "newton_step_count",
    "paper_factor",
    "seed_shape",
    "solve_exact_gamma",
    "split_layout",
]
