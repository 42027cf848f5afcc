"""How a normalised importance map is held and shipped: one uint8 code per entry, on a log scale.

Normalised importances (engine/sta/importance.py) lie in [0, 1] and are heavy-tailed: on the demo zoo
half of the entries sit below 0.05 of their tensor's peak. A linear uint8 would put most entries in
code 0; rank quantiles would lose the values a threshold κ is defined on. So code 0 holds
everything below 10⁻⁶ (and exact zeros), and codes 1…255 cover 10⁻⁶…1 evenly in log10
(a step is 6/254 decades, a factor of 1.056). The decoded map *is* the map: thresholds compare codes
with `threshold_code(κ)`, the first code whose decoded value is ≥ κ, so `codes ≥ threshold_code(κ)`
equals `decode(codes) ≥ κ` exactly. A [K, P] map costs K·P bytes: 8 ViT-B/32 maps are 0.7 GB, not 2.8.
"""

from __future__ import annotations

import torch

DECADES = 6.0
LEVELS = 254  # codes 1 … 255
FLOOR = 10.0**-DECADES


def decode_table() -> torch.Tensor:
    """The value of every code 0…255 → float32 [256], increasing."""
    codes = torch.arange(256, dtype=torch.float64)
    values = 10.0 ** (DECADES * ((codes - 1) / LEVELS - 1))  # [256]
    values[0] = 0.0
    return values.float()


def encode(normalized: torch.Tensor) -> torch.Tensor:
    """Normalised importance [...] in [0, 1] → uint8 codes [...]; values < 10⁻⁶ become 0."""
    clamped = normalized.float().clamp(min=FLOOR, max=1.0)
    codes = 1 + torch.round(LEVELS * (1 + torch.log10(clamped) / DECADES))
    return torch.where(normalized >= FLOOR, codes, 0).to(torch.uint8)


def decode(codes: torch.Tensor) -> torch.Tensor:
    """uint8 codes [...] → float32 [...]."""
    return decode_table().to(codes.device)[codes.long()]


def threshold_code(threshold: float) -> int:
    """The smallest code whose value is ≥ `threshold` (256 when none is: nothing kept)."""
    if threshold <= 0.0:
        return 0
    return int(torch.searchsorted(decode_table(), torch.tensor([threshold], dtype=torch.float32)))


def importance_mask(codes: torch.Tensor, threshold: float) -> torch.Tensor | None:
    """bool mask of entries with importance ≥ `threshold` (same shape as `codes`); None keeps all."""
    level = threshold_code(threshold)
    return None if level == 0 else codes >= level
