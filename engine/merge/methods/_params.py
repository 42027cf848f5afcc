"""Parameters several methods declare alike (each method's own ones live in its module)."""

from engine.merge.declaration import Param

LAM_EACH = Param("lam", 0.3, -1.5, 1.5, 0.05, "scaling λ of each task vector", per_task=True, symbol="λ")
LAM_MERGED = Param("lam", 1.0, 0.0, 3.0, 0.05, "scaling λ of the merged vector τ_m", symbol="λ")
DENSITY = Param("density", 0.2, 0.01, 1.0, 0.01, "fraction d of each task vector kept, by magnitude", symbol="d")
DROP = Param("drop", 0.9, 0.0, 0.99, 0.01, "drop rate p; survivors are rescaled by 1/(1-p)", symbol="p")
SEED = Param("seed", 0.0, 0.0, 9999.0, 1.0, "random seed of the drop mask")
THRESHOLD = Param(
    "threshold", 0.05, 0.0, 1.0, 0.01, "keep entries whose importance, normalised per tensor, is ≥ κ", symbol="κ"
)
ALPHA = Param("alpha", 1.0, 0.0, 3.0, 0.05, "scaling α of the merged task matrices Δ: θ = θ₀ + α·Δ", symbol="α")
