"""A run directory and what a run needs around training: layout, safe writes, resume, runtime."""
