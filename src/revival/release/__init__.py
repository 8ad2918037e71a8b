"""What a release shows: its target layers, pruned positions (exact zeros), the pairs of linears of the same hidden units, and whether the positions can be read off (exposure, inspect)."""
