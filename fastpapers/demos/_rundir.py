"""Where a demo step keeps its short training run."""
import hashlib
import json
import os

from ..train.rundir import RUN_FORMAT, RUN_VERSION


def run_dir(out_dir, name, **config):
    """A folder under out_dir named after the step and a digest of its training settings.

    Demo steps resume their run so that a second `fastpapers demo` loads the finished model;
    a folder per configuration means a demo whose settings changed (a new release, another
    seed) trains afresh next to the old run instead of failing to resume it, and the old
    run is left as it was. The run-folder format and version (:mod:`fastpapers.train.rundir`)
    are part of the digest, so a folder written in another format is never resumed either."""
    key = {"_run_format": [RUN_FORMAT, RUN_VERSION], **config}
    digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return os.path.join(out_dir, f"{name}_{digest}")
