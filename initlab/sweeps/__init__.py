"""Sweeps: the plan (grid), the manifest, the backends that run points, the summary and the runner."""
