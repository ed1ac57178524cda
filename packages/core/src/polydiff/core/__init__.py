"""polydiff-core."""
