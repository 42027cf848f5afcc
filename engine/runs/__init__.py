"""What is kept of merges: the run log, merge recipes, the recipe runner, and export."""
