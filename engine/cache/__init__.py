"""The one in-memory cache of expensive intermediates (evaluations, masks, maps), bounded by a byte budget."""
