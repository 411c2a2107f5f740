"""One training harness for every fastpapers model.

You write a *step function*; the :class:`Trainer` owns everything else: the batches (an
endless, resumable, rank-sharded iterator), device placement, AMP on CUDA, gradient
averaging across ``torchrun`` processes, clipping, LR schedulers, seeding, the tqdm bar,
metrics (``metrics.jsonl``, ``metrics.csv``, TensorBoard when installed), PNG sample grids,
and atomic checkpoints that resume bit-exactly.

Example — a GAN with alternating D and G steps::

    import torch, torch.nn.functional as F
    from fastpapers.train import Trainer, seed_everything

    seed_everything(0)                                   # before building the models
    G, D = make_generator(), make_discriminator()
    opt = {"D": torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999)),
           "G": torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999))}

    def step(tr, batch):                                 # batch is already on tr.device
        real, _ = batch
        z = torch.randn(real.shape[0], 100, device=tr.device)
        fake = G(z)
        d_real, d_fake = D(real), D(fake.detach())
        loss_d = (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                  + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
        tr.step("D", loss_d)                             # zero_grad, backward, all-reduce, clip, step
        d_gen = D(fake)
        loss_g = F.binary_cross_entropy_with_logits(d_gen, torch.ones_like(d_gen))
        tr.step("G", loss_g)
        return {"loss_d": loss_d, "loss_g": loss_g}     # averaged over log_every steps, logged

    tr = Trainer({"G": G, "D": D}, opt, step, data=train_set, batch_size=64,
                 out_dir="runs/gan", seed=0, device="cuda", amp=True, grad_clip=10.0,
                 schedulers={"G": torch.optim.lr_scheduler.StepLR(opt["G"], 1000, 0.5)},
                 sample_fn=lambda tr: G(torch.randn(64, 100, device=tr.device)),
                 sample_every=500, sample_range=(-1, 1), checkpoint_every=500)
    tr.fit(steps=5000, resume=True)                      # resume=True: continue from the checkpoint

Rules worth knowing:

- Inside ``step_fn(tr, batch)``: ``tr.device``, ``tr.global_step`` (steps done before this
  one), ``tr.modules`` / ``tr.optimizers`` (your dicts), ``tr.rank``, ``tr.world_size``,
  ``tr.is_main``, ``tr.stop_requested`` (a signal asked the run to stop after this step).
  Return a dict of scalars to log (or None).

- ``modules`` / ``optimizers`` are dicts of names; modules are moved to ``device`` in place.
  ``tr.step(name, loss)`` updates one optimiser; call it as many times per step as you like
  (``retain_graph=True`` when two losses share a graph; ``clip=`` overrides ``grad_clip``).
  L-BFGS: ``tr.step("img", closure=lambda: loss_fn(image))``.
  Schedulers (keyed by optimiser name) step after each step of their optimiser, except
  ``ReduceLROnPlateau``, which you step yourself.
- ``data`` is a map-style Dataset (or None: then ``batch`` is None and the step draws its
  own data). ``batch_size`` is the *global* batch, split evenly across processes; epochs are
  reshuffled from ``seed + epoch``; incomplete last batches are dropped.
- ``step_fn`` runs under autocast when ``amp`` is on (True/'fp16' with a GradScaler per
  optimiser, or 'bf16'; CUDA only). Returned values may be tensors (no host sync per step).
- ``sample_fn(tr)`` -> (N, C, H, W) tensor or ``{name: tensor}``; ``eval_fn(tr)`` ->
  ``{name: float}`` (logged as ``eval/<name>``). Both run on rank 0, in eval mode, under
  ``no_grad``, with the RNG seeded from ``seed`` and restored afterwards, so sampling never
  changes the training run.
- Run folders (:mod:`fastpapers.train.rundir`): ``create_run(out, paper, config, resume=...)``
  writes ``run.json`` (format ``fastpapers-run``, version 1); pass ``run.path`` as ``out_dir``.
  ``load_run(path, paper)`` opens one for sampling or evaluation.
- Checkpoint ``<out_dir>/checkpoint.pt`` (or ``checkpoint_path``) is written every
  ``checkpoint_every`` steps and at the end, atomically (temp file + ``os.replace``); it holds
  modules, optimisers, schedulers, grad scalers, every rank's RNG states, the data position
  and the step. Every file written whole carries a ``.sha256`` sidecar that loading verifies
  (:mod:`fastpapers.train.checkpoint`). A killed run loses at most the steps since the last
  checkpoint. SIGINT and SIGTERM (what schedulers send) let the current step finish, save a
  checkpoint and stop: ``KeyboardInterrupt`` (the CLI exits 130) or ``SystemExit(143)``; a
  second signal stops at once. (Single-process runs; under torchrun the default handlers
  stay.) Weights alone: ``load_checkpoint(path, {"G": G})``.
- Distributed: launch the same script with ``torchrun --nproc_per_node N script.py``; the
  trainer joins the process group (gloo on CPU, nccl on CUDA, GPU = LOCAL_RANK), broadcasts
  rank 0's weights, averages gradients before every optimiser step (DDP's semantics; done
  per optimiser rather than through ``nn.parallel.DistributedDataParallel`` because GAN steps
  run modules several times per backward and leave some without gradients, which DDP's
  reducer rejects), averages logged metrics, and logs/checkpoints on rank 0 only. Every rank
  must call ``tr.step`` for the same optimisers in the same order.
"""
from .checkpoint import (CorruptFileError, FileWriteError, atomic_save, atomic_save_json, load_checkpoint,
                         load_torch_file, read_json_file, seed_everything)
from .data import ResumableLoader
from .log import MetricLogger
from .rundir import RUN_FORMAT, RUN_VERSION, Run, RunFolderError, create_run, load_run
from .trainer import Trainer

__all__ = ["Trainer", "ResumableLoader", "MetricLogger", "atomic_save", "atomic_save_json", "load_checkpoint",
           "load_torch_file", "read_json_file", "seed_everything", "CorruptFileError", "FileWriteError",
           "RUN_FORMAT", "RUN_VERSION", "Run", "RunFolderError", "create_run", "load_run"]
