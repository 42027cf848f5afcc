"""Which entries of each task vector survive: magnitude top-k (TIES's trim) and random drop (DARE).

Masks are bool [K, P] (1 byte per entry) and keep exactly round(d·P) entries per task. A magnitude trim is
found as a cut per task (`magnitude_cuts`): the magnitude cₖ of its round(d·P)-th largest entry, all entries
above it, and of the entries equal to it (ties are common among 88M float32 magnitudes) the first ones in
index order, up to the count. The merge kernels apply the cut chunk by chunk and never write a mask.
Up to `EXACT_TOPK_LIMIT` entries per task the cut is a `kthvalue` over the row. Above that (a full sort or
kthvalue over 88M entries takes seconds even on a GPU: bench/sparse_merge.py), a seeded sample of
`QUANTILE_SAMPLE` magnitudes brackets the cut in a narrow band, one chunked scan counts the entries above the
band and gathers those inside it with their positions, and the cut is the remainder's `kthvalue` in the band
(the whole row's, should the sample miss).
A bfloat16 T (a bf16 store) is cut by the same rule on its own values, the cut kept in float32 (exact): with
8 bits of mantissa many more magnitudes tie at the cut, so index order picks more of the kept set
(bench/bf16_zoo.py counts them on the zoo).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.store.reader import Reader, Rows

EXACT_TOPK_LIMIT = 1 << 22  # 4M entries per task: exact kthvalue below, sampled band above
QUANTILE_SAMPLE = 1 << 18
SCAN_CHUNK = 1 << 18  # entries scanned at a time on the CPU (1 MiB of floats, cache-resident)
GPU_CHUNK_ENTRIES = 1 << 25  # on a GPU: few, large blocks


@dataclass(frozen=True)
class MagnitudeCut:
    """Per task k: keep |τₖ| > cₖ, and |τₖ| = cₖ in the columns before eₖ (exactly round(d·P) entries)."""

    values: torch.Tensor  # [K] cₖ, on T's device
    tie_ends: tuple[int, ...]  # eₖ: entries equal to the cut are kept before this column
    _ends: torch.Tensor  # [K, 1] eₖ on T's device
    _above: torch.Tensor  # [K, 1] the next float above cₖ: "≥ it" is "> cₖ"

    @classmethod
    def of(cls, values: torch.Tensor, tie_ends: tuple[int, ...]) -> MagnitudeCut:
        ends = torch.tensor(tie_ends, device=values.device)[:, None]  # [K, 1]
        return cls(values, tie_ends, ends, torch.nextafter(values, torch.full_like(values, torch.inf))[:, None])

    def keep(self, magnitudes: torch.Tensor, start: int, *, out: torch.Tensor) -> torch.Tensor:
        """Which entries of the column block [start, start + n) are kept, from their magnitudes [K, n] → out
        [K, n] (bool, or float 0/1)."""
        n = magnitudes.shape[1]
        cut = torch.where(self._ends >= start + n, self.values[:, None], self._above)  # [K, 1] ≥ c, then > c
        torch.ge(magnitudes, cut, out=out)
        for k, end in enumerate(self.tie_ends):
            if start < end < start + n:  # the block where task k stops keeping ties: its first columns keep them
                torch.ge(magnitudes[k, : end - start], self.values[k], out=out[k, : end - start])
        return out


def kept_count(num_entries: int, density: float) -> int:
    """round(d·P), at least one entry."""
    return max(1, round(density * num_entries))


def magnitude_cuts(T: Rows, density: float, *, seed: int = 0) -> MagnitudeCut:
    """Per task, the cut that keeps its round(d·P) largest magnitudes (d = 1: every entry)."""
    K, P = T.shape
    work = torch.promote_types(T.dtype, torch.float32)
    if density >= 1.0:
        return MagnitudeCut.of(torch.zeros(K, dtype=work, device=T.device), (P,) * K)
    n_keep, reader, cuts = kept_count(P, density), Reader.of(T), []
    for k in range(K):  # over task rows: one row's pages resident (or densified) at a time
        cuts.append(_row_cut(reader.row(k), n_keep, seed=seed + k))
        reader.release_row(k)
    values = torch.stack([c for c, _ in cuts]).to(work)  # [K] a bfloat16 row's cut is exact in float32
    return MagnitudeCut.of(values, tuple(e for _, e in cuts))


def magnitude_mask(T: Rows, density: float, *, seed: int = 0) -> torch.Tensor:
    """Per task, keep the `density` fraction of entries with the largest |τ| → bool [K, P]."""
    K, P = T.shape
    cuts = magnitude_cuts(T, density, seed=seed)
    mask = torch.empty(K, P, dtype=torch.bool, device=T.device)  # [K, P]
    width = chunk_columns(T, SCAN_CHUNK)
    magnitudes = torch.empty(K, min(width, P), dtype=T.dtype, device=T.device)  # [K, c] reused
    reader = Reader.of(T)
    for start in range(0, P, width):
        cols = slice(start, start + width)
        block = reader.columns(cols)  # [K, c]
        cuts.keep(torch.abs(block, out=magnitudes[:, : block.shape[1]]), start, out=mask[:, cols])
        reader.release_columns(cols)
    return mask


def _row_cut(row: torch.Tensor, n_keep: int, *, seed: int) -> tuple[torch.Tensor, int]:
    """(cₖ as a 0-d tensor, eₖ) of one task vector [P]."""
    P = row.numel()
    if P > EXACT_TOPK_LIMIT:
        lo, hi = _bracket(row, n_keep, seed=seed)
        above, values, positions = _scan(row, lo, hi)  # count above the band; magnitudes [B] in it, where
        rest = n_keep - above
        if 1 <= rest <= values.numel():
            return _cut_among(values, positions, rest, above)
    mag = row.abs()  # [P] the exact way: a small row, or a sample that missed the cut
    return _cut_among(mag, torch.arange(P, device=row.device), n_keep, 0)


def _cut_among(values: torch.Tensor, positions: torch.Tensor, rest: int, above: int) -> tuple[torch.Tensor, int]:
    """The cut of the `rest` largest `values` [B] (at ascending `positions` [B]) after `above` larger entries."""
    cut = torch.kthvalue(values, values.numel() - rest + 1).values  # 0-d
    ties_kept = rest - int(torch.count_nonzero(values > cut))  # ≥ 1 of the entries equal to the cut
    tied = positions[values == cut]  # [t] ascending
    return cut, int(tied[ties_kept - 1]) + 1


def _bracket(row: torch.Tensor, n_keep: int, *, seed: int) -> tuple[float, float]:
    """(lo, hi): magnitudes that bracket the cut, ~6σ of a seeded sample's quantile estimate either side."""
    P = row.numel()
    gen = torch.Generator(device=row.device).manual_seed(seed)
    sample = row[torch.randint(0, P, (QUANTILE_SAMPLE,), generator=gen, device=row.device)].abs_()  # [S]
    q = 1.0 - n_keep / P
    spread = 6.0 * (q * (1 - q) / QUANTILE_SAMPLE) ** 0.5 + 1.0 / QUANTILE_SAMPLE
    bounds = torch.tensor([max(0.0, q - spread), min(1.0, q + spread)], device=row.device)
    lo, hi = torch.quantile(sample.float(), bounds).tolist()
    return lo, hi


def _scan(row: torch.Tensor, lo: float, hi: float) -> tuple[int, torch.Tensor, torch.Tensor]:
    """One pass over `row` [P] in cache-sized chunks: #{|x| > hi}, and the magnitudes with lo < |x| ≤ hi [B]
    with their positions [B] (ascending)."""
    width = chunk_columns(row, SCAN_CHUNK)
    mag = torch.empty(min(width, row.numel()), dtype=row.dtype, device=row.device)  # [c] reused
    high_buf = torch.empty(mag.shape, dtype=torch.bool, device=row.device)  # [c]
    band_buf = torch.empty(mag.shape, dtype=torch.bool, device=row.device)  # [c]
    above = torch.zeros((), dtype=torch.int64, device=row.device)
    values, positions = [], []
    for start in range(0, row.numel(), width):
        x = row[start : start + width]
        n = x.numel()
        m = torch.abs(x, out=mag[:n])
        high = torch.gt(m, hi, out=high_buf[:n])
        above += torch.count_nonzero(high)
        where = torch.gt(m, lo, out=band_buf[:n]).logical_xor_(high).nonzero().squeeze(1)  # [b]
        values.append(m[where])
        positions.append(where + start)
    return int(above), torch.cat(values), torch.cat(positions)


def chunk_columns(like: torch.Tensor, cpu_entries: int) -> int:
    """Columns per chunk of `like` ([K, P] or [P]): `cpu_entries` floats a block on the CPU (cache-sized),
    `GPU_CHUNK_ENTRIES` on a GPU (where launches cost more)."""
    rows = like.shape[0] if like.dim() == 2 else 1
    return max(1024, (cpu_entries if like.device.type == "cpu" else GPU_CHUNK_ENTRIES) // rows)


def dare_keep_mask(
    shape: tuple[int, int], drop: float, *, seed: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """DARE's Bernoulli mask (Yu et al., ICML 2024): keep each entry with probability 1 − p → bool [K, P]."""
    gen = torch.Generator(device=device).manual_seed(seed)
    K, P = shape
    mask = torch.empty(K, P, dtype=torch.bool, device=device)  # [K, P]
    uniforms = torch.empty(P, device=device)  # [P] one row's draws, reused: never a float [K, P]
    for k in range(K):
        torch.ge(torch.rand(P, generator=gen, device=device, out=uniforms), drop, out=mask[k])
    return mask


class DropStream:
    """DARE's keep mask handed out a column block at a time, equal entry for entry to `dare_keep_mask` (CPU).

    `dare_keep_mask` draws row k's uniforms as numbers k·P to (k+1)·P − 1 of one seeded stream, and the CPU
    generator yields the same numbers however its draws are split. So each row gets its own generator, set at
    its row's start by one pass of discarded draws (an extra (K − 1)·P draws, about 0.6 s per 88M), and draws
    its columns as the merge reaches them: K generator states (5 KB each) and one block instead of a bool
    [K, P] (6 GB for 20 tasks of ViT-L/14). For a T out of core; blocks are asked for in order, each once.
    """

    def __init__(self, shape: tuple[int, int], drop: float, *, seed: int) -> None:
        K, P = shape
        self.drop, self.numel, self.next_column = drop, P, 0
        stream = torch.Generator().manual_seed(seed)
        scratch = torch.empty(min(P, SCAN_CHUNK))  # [c] discarded draws
        self._rows: list[torch.Generator] = []
        for k in range(K):
            row = torch.Generator()
            row.set_state(stream.get_state())  # the stream at row k's first number
            self._rows.append(row)
            if k < K - 1:
                _discard(stream, P, scratch=scratch)
        self._uniforms = torch.empty(0)

    def keep(self, start: int, n: int, *, out: torch.Tensor) -> torch.Tensor:
        """Columns start … start + n − 1 of the mask as 0/1 in `out` [K, n] (any float dtype)."""
        if start != self.next_column or start + n > self.numel:
            raise ValueError(f"DARE's drop stream is at column {self.next_column} of {self.numel}, not {start}")
        if self._uniforms.numel() < n:
            self._uniforms = torch.empty(n)  # [n] one row's draws, reused
        uniforms = self._uniforms[:n]
        for k, row in enumerate(self._rows):
            torch.ge(torch.rand(n, generator=row, out=uniforms), self.drop, out=out[k])
        self.next_column = start + n
        return out


def _discard(stream: torch.Generator, count: int, *, scratch: torch.Tensor) -> None:
    """Advance `stream` by `count` uniform draws, `scratch` [c] at a time."""
    for start in range(0, count, scratch.numel()):
        torch.rand(min(scratch.numel(), count - start), generator=stream, out=scratch[: count - start])
