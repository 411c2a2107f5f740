"""Demo steps for ``fastpapers demo``: each module has ORDER, TITLE and
``run(out_dir, *, device, seed) -> list of written paths``."""
