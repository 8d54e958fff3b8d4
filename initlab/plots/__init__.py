"""Figures, drawn only from the files of a run or sweep directory (never from a live experiment)."""
