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
    class Config(RecipeConfig):         # the paper's defaults; plain JSON values only
        ...model fields..., ...training fields (steps, batch_size, lr..., seed, *_every)...
        PAPER: ClassVar[str] = PAPER
        RESUMABLE: ClassVar[tuple]      # fields a --resume may change (the schedule); all
                                        # others must equal the run's, or the resume is refused
        FLAGS: ClassVar[dict]           # field -> CLI flag where they differ (ngf -> "--width")
        def __post_init__(self):        # validates with self.check_int / check_float /
            ...                         # check_choice / fail: ValueError "ngf (--width) must be
                                        # an int >= 1, got 0"
        # inherited: Config.from_dict(d) (unknown keys refused by name, missing keys take the
        # defaults: a run saved before a field existed was trained with its default),
        # cfg.to_dict(), cfg.replace(**changes), cfg.differences(other)

    build(cfg) -> dict[str, nn.Module]          # fresh networks; the names used in checkpoints
    train(cfg, out, *, resume=False, data=None, device="cpu", progress=True) -> Run
    load(run, device="cpu") -> Loaded           # run: a run folder, any file in it, a Run, or a
                                                # Loaded (returned as it is)
    evaluate(run, ..., device="cpu") -> dict    # run: anything load takes; metrics by name
    sample(run, ..., out, ...) -> list[str]     # the files written; transfer / battle / compare /
                                                # train_judge as the paper has them, same conventions

In this package: ``text2image`` (sample, transfer, train_judge/load_judge with its own
``JudgeConfig`` and run folder ``text2image_judge``, evaluate(run, judge)), ``gran`` (sample,
battle(run1, run2) -> metrics.gam.BattleResult, evaluate(run, opponent)), ``lapgan`` (sample,
evaluate: Parzen, compare). A command shell builds the Config from its flags, calls one recipe
function and prints; argparse types from :mod:`fastpapers.commands._common` refuse bad values
by flag before anything runs.

The pieces (:mod:`fastpapers.recipes._common`): :class:`~._common.RecipeConfig`, the base of
every Config; ``open_run(out, cfg, resume=...)`` (a new run folder, or the one there checked
against ``cfg`` except ``RESUMABLE`` fields, its run.json then recording the new schedule);
``load_trained(run, paper, Config, build, device, weights=None)``, which is all of a
``load``; ``last_metrics(folder)``; and :class:`~._common.Loaded`: ``config`` (the
recipe's Config), ``nets`` (name -> module, eval mode, on ``device``), ``path`` (the run
folder), ``run`` (its :class:`~fastpapers.train.rundir.Run`), ``device`` and ``artefacts``
(a vocabulary or other files a paper stores).

``train`` writes one run folder (:mod:`fastpapers.train.rundir`): ``run.json`` (format name and
version, the paper, the whole Config), the checkpoint(s), metrics, samples and the paper's
artefacts (``Run.save_json`` / ``save_tensors``), every whole file checksummed. ``load``
refuses another paper's folder naming both. A folder of the older formats (``config.json``,
``lapgan.json``, ``judge.json``, no run.json) still loads, read in place with nothing written
(``Loaded.run.version`` is 0); ``--resume`` into one is refused with the call that converts it,
``fastpapers.train.rundir.convert_legacy(folder, paper)``.

Errors are ``ValueError`` / ``FileNotFoundError`` with one line naming the argument (as its CLI
flag where there is one) or the file, so the command shells only parse flags and print.
"""
