"""Collections and pools: the manifest, discovery of foreign pools, conversion, and what a pool holds."""
