"""Recipes: each paper's whole procedure (data, training, loading, evaluation) behind one face.

Layers, imports running downwards only::

    commands/ (argparse shells)   demos/   experiments/
                 \\                  |          /
                  recipes/<paper>.py   (this package)
                 /        |        \\          \\
    models/<paper>.py  metrics/  train/ (Trainer, run folders)  data/  ->  ops/

A model module never imports a recipe, a recipe never imports a command.

The face
--------
One name per paper (``text2image``, ``gran``, ``lapgan``, ...) names the recipe
``fastpapers.recipes.<paper>``, the model module ``fastpapers.models.<paper>``, the CLI
subcommand ``fastpapers <paper>``, the run folder's ``paper`` and the docs. Every recipe module
has::

    PAPER = "<paper>"

    @dataclass
    class Config:                       # the paper's defaults; plain JSON values only
        ...model fields..., ...training fields (steps, batch_size, lr..., seed, *_every)...
        RESUMABLE: ClassVar[tuple]      # fields a --resume may change (the schedule); all
                                        # others must equal the run's, or the resume is refused
        FLAGS: ClassVar[dict]           # field -> CLI flag where they differ (ngf -> "--width")
        # __post_init__ validates: ValueError "<field> (--flag) must be ..., got ..."
        # Config.from_dict(d): unknown keys refused by name, missing keys take the defaults
        # (a run saved before a field existed was trained with its default); cfg.to_dict()

    build(cfg) -> dict[str, nn.Module]          # fresh networks; the names used in checkpoints
    train(cfg, out, *, resume=False, data=None, device="cpu", progress=True) -> Run
    load(run, device="cpu") -> Loaded           # run: a run folder, any file in it, or a Run
    evaluate(run, ..., device="cpu") -> dict    # run: what load takes, or a Loaded; metrics by name
    sample(run, ..., out=...) -> list[str]      # the files written; and transfer / battle /
                                                # compare as the paper has them, same conventions

``Loaded`` (:mod:`fastpapers.recipes._common`) is ``config`` (the recipe's Config), ``nets``
(name -> module, eval mode, on ``device``), ``path`` (the run folder), ``run`` (the
:class:`~fastpapers.train.rundir.Run`, or None for a folder of an older format, which still
loads) and ``device``. ``train`` writes one run folder (``fastpapers.train.rundir``): the
format name and version, the paper, the whole Config, the checkpoint(s), metrics, samples and
the paper's artefacts; ``load`` refuses another paper's folder with a message naming both.

Errors are ``ValueError`` / ``FileNotFoundError`` with one line naming the argument (as its CLI
flag where there is one) or the file, so the command shells only parse flags and print.
"""
