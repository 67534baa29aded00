"""Where to cut one merged batch into engine runs: sort rows by length, cut where padding costs least,
then make sure every lane has a run (the CPU encoder's planning, pure arithmetic on row lengths)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bge_model_repository.tokenization import round_up


@dataclass(frozen=True)
class SubBatch:
    """Rows (indices into the merged batch) run together, padded to `width` columns."""

    rows: np.ndarray
    width: int


RUN_OVERHEAD_TOKENS = 128
"""What launching one engine run costs, in tokens of work (the planner's fixed price per sub-batch)."""


def plan_sub_batches(
    lengths: Sequence[int] | np.ndarray,
    max_batch: int,
    max_tokens: int,
    pad_to_multiple_of: int = 1,
    run_overhead_tokens: int = RUN_OVERHEAD_TOKENS,
) -> list[SubBatch]:
    """Sort rows by length and cut them into runs that minimise computed tokens.

    Sorted neighbours are similar in length, so a run pads little. Where to cut is an exact
    dynamic programme over the sorted rows (n <= max batch, so O(n^2) is nothing): each run
    costs its padded size plus a fixed `run_overhead_tokens` for launching it, within
    `max_batch` rows and `max_tokens` padded tokens (a single longer row runs alone).
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(lengths, kind="stable")
    widths = [max(round_up(int(lengths[i]), pad_to_multiple_of), 1) for i in order]
    n = len(order)
    best = [0.0] + [float("inf")] * n  # best[j]: cheapest plan for the first j sorted rows
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        width = widths[j - 1]  # the longest row of any run ending at j
        for i in range(j - 1, max(j - max_batch, 0) - 1, -1):
            count = j - i
            if count > 1 and width * count > max_tokens:
                break
            cost = best[i] + width * count + run_overhead_tokens
            if cost < best[j]:
                best[j], cut[j] = cost, i
    plans: list[SubBatch] = []
    j = n
    while j > 0:
        i = cut[j]
        plans.append(SubBatch(rows=order[i:j], width=widths[j - 1]))
        j = i
    return plans[::-1]


def run_cost(plan: SubBatch) -> int:
    return plan.width * len(plan.rows) + RUN_OVERHEAD_TOKENS


def spread_over_lanes(
    plans: Sequence[SubBatch], lanes: int, lengths: Sequence[int] | np.ndarray, pad_to_multiple_of: int = 1
) -> list[SubBatch]:
    """At least `lanes` runs where there are enough rows, longest work first.

    While there are fewer runs than lanes, the costliest run of two rows or more is cut in two halves of
    its (length-sorted) rows, each half padded to its own longest row. Handing the runs out longest first
    to whichever lane is free (greedy list scheduling) keeps the lanes' finishing times close.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    plans = list(plans)
    while len(plans) < lanes:
        divisible = [i for i, plan in enumerate(plans) if len(plan.rows) > 1]
        if not divisible:
            break
        rows = plans.pop(max(divisible, key=lambda i: run_cost(plans[i]))).rows
        for half in (rows[: len(rows) // 2], rows[len(rows) // 2 :]):
            plans.append(SubBatch(rows=half, width=max(round_up(int(lengths[half].max()), pad_to_multiple_of), 1)))
    return sorted(plans, key=run_cost, reverse=True)
