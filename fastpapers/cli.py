"""The ``fastpapers`` console entry point.

Each module in :mod:`fastpapers.commands` adds its own subcommand through ``register(sub)``,
so a paper brings its CLI without touching this file. What this file guarantees for all of
them:

- **One line per error, never a traceback, for what a user can cause.** Bad flags are refused
  by argparse (exit 2) with ``<prog>: error: argument --steps: expected a positive int, got
  '0' (see <prog> --help)``; :func:`main` returns 2 for a refused value and leaves through
  ``SystemExit(2)`` for a malformed command line (unknown flag, missing argument). Errors a
  command raises for bad input or bad files -- ``ValueError`` and ``TypeError`` (including
  :class:`~fastpapers.train.RunFolderError` and :class:`~fastpapers.train.CorruptFileError`),
  ``OSError`` (``FileNotFoundError``,
  ``PermissionError``, ``IsADirectoryError``, a full disk), and the errors ``torch.load``,
  ``pickle`` and ``json`` raise for a damaged file -- print ``fastpapers <command> <verb>:
  error: <reason>`` and exit 2; the reason names the file when the error came from reading
  one. Other exceptions are programming errors and keep their traceback.
  ``FASTPAPERS_TRACEBACK=1`` shows the traceback of every error.
- **A bare paper subcommand** (``fastpapers caption``) prints its verbs and exits 2.
- **The flag conventions of DESIGN.md hold for every command**: numeric flags a command
  declares with plain ``type=int`` / ``type=float`` get the checked types of
  :mod:`fastpapers.commands._common` by name (``--steps`` and ``--batch-size`` positive,
  ``--checkpoint-every`` and ``--sample-every`` >= 0, learning rates finite and > 0, every
  float finite, ``--out`` non-empty; see ``_INT_TYPES`` / ``_FLOAT_TYPES``). A command that
  picks its own ``type=`` keeps it.
- Interrupts: Ctrl-C exits 130 (a training run saves its checkpoint first), SIGTERM 143.
"""
import argparse
import importlib
import json
import os
import pickle
import pkgutil
import sys
import zipfile

from . import __version__
from .commands import _common as T
from .train.checkpoint import torch_load_reason

# Flag conventions applied to every command's plain int/float flags, by argparse dest.
_INT_TYPES = {**dict.fromkeys(("steps", "batch_size", "beam", "beams", "n", "samples", "timesteps", "width", "hidden",
                               "emb", "levels", "threads", "stage_steps", "delta", "max_len", "max_length",
                               "conv_hidden", "conv_kernel", "dim", "iters", "n_test", "n_train", "size", "scenes",
                               "top_k", "train_size", "zoom", "attributes", "embed_steps", "style_steps", "rows"),
                              T.positive_int),
              **dict.fromkeys(("checkpoint_every", "sample_every", "save_every", "xent_steps", "noise_anneal_steps",
                               "cls"), T.nonneg_int)}
_FLOAT_TYPES = {**dict.fromkeys(("lr", "lr_d", "lr_g", "rl_lr", "cpu_seconds", "style_scale"), T.positive_float),
                **dict.fromkeys(("content_weight", "style_weight", "tv_weight", "reg_weight", "instance_noise",
                                 "tolerance"), T.nonneg_float),
                **dict.fromkeys(("val_fraction", "style_blend"), T.prob_float)}


class _ValueRefusedExit(SystemExit):
    """A flag value refused by its checked type: :func:`main` returns 2 for it, as for any
    other bad input, where a malformed command line (an unknown flag, a missing argument)
    leaves through argparse's ``SystemExit(2)``. Outside ``main`` it is that SystemExit."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (the usage is one ``--help`` away)."""

    def error(self, message):
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        current = sys.exc_info()[1]  # argparse calls error() while handling its ArgumentError
        if isinstance(current, argparse.ArgumentError) and isinstance(current.__context__, T.ValueRefused):
            raise _ValueRefusedExit(2)
        self.exit(2)


def _verbs_action(parser):
    for action in parser._actions:  # argparse keeps its actions in this (documented-by-use) list
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def _needs_more(parser) -> bool:
    """Whether the command cannot run without a verb or another positional word."""
    return _verbs_action(parser) is not None or any(
        not a.option_strings and a.nargs not in ("?", "*", argparse.REMAINDER) for a in parser._actions)


def _apply_conventions(parser) -> None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            action.required = False  # a bare paper command prints its verbs instead (see main)
            for child in action.choices.values():
                _apply_conventions(child)
            continue
        if not action.option_strings:
            continue
        if action.dest == "out" and action.type is None:
            action.type = T.nonempty_path
        elif action.type is int and action.dest in _INT_TYPES:
            action.type = _INT_TYPES[action.dest]
        elif action.type is float:
            action.type = _FLOAT_TYPES.get(action.dest, T.finite_float)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fastpapers",
                     description="Seven classic deep-learning papers over fused PyTorch operators.")
    parser.add_argument("--version", action="version", version=f"fastpapers {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    from . import commands
    for mod_info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if mod_info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{commands.__name__}.{mod_info.name}")
        mod.register(sub)
    _apply_conventions(parser)
    return parser


# ---- turning expected errors into one line ---------------------------------------------------
_LOAD_ERRORS = (EOFError, pickle.UnpicklingError, zipfile.BadZipFile)


def _frames(tb):
    while tb is not None:
        yield tb.tb_frame
        tb = tb.tb_next


def _file_being_read(exc: BaseException):
    """The file a torch.load / json.load in the traceback was reading, or None."""
    found = None
    for frame in _frames(exc.__traceback__):
        code = frame.f_code
        where = code.co_filename.replace(os.sep, "/")
        if code.co_name == "load" and where.endswith("torch/serialization.py"):
            f = frame.f_locals.get("f")
            found = f if isinstance(f, (str, os.PathLike)) else getattr(f, "name", found)
        elif code.co_name == "load" and where.endswith("json/__init__.py"):
            found = getattr(frame.f_locals.get("fp"), "name", found)
    return os.fspath(found) if isinstance(found, (str, os.PathLike)) else None


def _from_torch_load(exc: BaseException) -> bool:
    return any(f.f_code.co_filename.replace(os.sep, "/").endswith("torch/serialization.py")
               for f in _frames(exc.__traceback__))


def _expected(exc: BaseException) -> bool:
    if isinstance(exc, (ValueError, TypeError, OSError) + _LOAD_ERRORS):
        return True
    # torch.load raises RuntimeError for a truncated or foreign zip archive.
    return isinstance(exc, RuntimeError) and _from_torch_load(exc)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    path = _file_being_read(exc)
    if isinstance(exc, OSError) and exc.strerror and text.startswith("[Errno"):
        text = f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    if not isinstance(exc, ValueError) and (isinstance(exc, _LOAD_ERRORS) or _from_torch_load(exc)):
        # torch.load reports a damaged file as RuntimeError, OSError, EOFError or UnpicklingError.
        empty = path is not None and os.path.isfile(path) and os.path.getsize(path) == 0
        text = "file is empty" if empty else \
            f"not a readable file (truncated or corrupt?): {torch_load_reason(exc)}"
    if isinstance(exc, json.JSONDecodeError):
        text = f"not valid JSON (truncated or corrupt?): {text}"
    if path and path not in text and os.path.basename(path) not in text:
        text = f"{path}: {text}"
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def main(argv=None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    commands = _verbs_action(parser).choices
    if len(argv) == 1 and argv[0] in commands and _needs_more(commands[argv[0]]):
        commands[argv[0]].print_help()  # `fastpapers caption`, `fastpapers densecap`: show the verbs
        return 2
    try:
        args = parser.parse_args(argv)
    except _ValueRefusedExit as exc:
        return int(exc.code)
    name = getattr(args, "command", None)
    if name is None:
        parser.print_help()
        return 2
    command = _verbs_action(parser).choices[name]
    verbs = _verbs_action(command)
    if verbs is not None and getattr(args, verbs.dest, None) is None:
        command.print_help()  # `fastpapers caption`: show the verbs
        return 2
    if not getattr(args, "func", None):
        command.print_help()
        return 2
    prog = " ".join(p for p in ("fastpapers", name, getattr(args, verbs.dest, None) if verbs else None) if p)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our stdout went away (`| head`): stop quietly, as other tools do.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 141
    except Exception as exc:
        if not _expected(exc) or os.environ.get("FASTPAPERS_TRACEBACK"):
            raise
        print(f"{prog}: error: {_reason(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
