"""METEOR 1.5 through pycocoevalcap's jar, with a bridge that does not break.

pycocoevalcap's own wrapper writes a line and blocks reading the answer; when Java dies (no
Java, out of memory) or a sentence holds a newline or ``|||`` it hangs or fails with "Broken
pipe" (jcjohnson/densecap#50). Here: one Java process per :class:`Meteor`, started lazily;
all requests of a call are written by a writer thread while the answers are read (so neither
pipe can fill up and block the other); stderr is drained in the background and quoted when
the process dies; inputs are sanitised; a missing Java raises :class:`MeteorUnavailable`.
"""
import importlib.util
import os
import shutil
import subprocess
import threading
from typing import List, Optional, Sequence, Tuple


class MeteorUnavailable(RuntimeError):
    """Java or the METEOR jar is missing."""


def meteor_jar() -> Optional[str]:
    spec = importlib.util.find_spec("pycocoevalcap")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "meteor", "meteor-1.5.jar")
    return path if os.path.isfile(path) else None


def meteor_available(java: str = "java") -> bool:
    return shutil.which(java) is not None and meteor_jar() is not None


def _clean(s: str) -> str:
    return " ".join(s.replace("|||", " ").split())


class Meteor:
    """``Meteor().score(hyps, refs)`` -> (corpus METEOR, per-sentence scores), identical to
    pycocoevalcap's ``Meteor().compute_score``. Use as a context manager or call ``close()``."""

    def __init__(self, *, java: str = "java", jar: Optional[str] = None, memory: str = "2G",
                 language: str = "en", timeout: float = 600.0):
        java_path = shutil.which(java)
        if java_path is None:
            raise MeteorUnavailable(f"METEOR needs Java: {java!r} is not on PATH (install a JRE, e.g. openjdk-17); "
                                    "use fastpapers.metrics.token_f1 instead")
        jar = jar or meteor_jar()
        if jar is None or not os.path.isfile(jar):
            raise MeteorUnavailable(f"METEOR jar not found ({jar or 'pycocoevalcap/meteor/meteor-1.5.jar'}); "
                                    "install pycocoevalcap")
        self.cmd = [java_path, "-jar", f"-Xmx{memory}", jar, "-", "-", "-stdio", "-l", language, "-norm"]
        self.cwd = os.path.dirname(os.path.abspath(jar))
        self.timeout = timeout
        self._proc: Optional[subprocess.Popen] = None
        self._stderr: List[bytes] = []
        self._lock = threading.Lock()

    def _start(self):
        if self._proc is not None and self._proc.poll() is None:
            return
        self._stderr = []
        self._proc = subprocess.Popen(self.cmd, cwd=self.cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE)
        threading.Thread(target=self._drain, args=(self._proc.stderr, self._stderr), daemon=True).start()

    @staticmethod
    def _drain(pipe, sink):
        for line in iter(pipe.readline, b""):
            sink.append(line)

    def _died(self, what: str) -> RuntimeError:
        code = self._proc.poll() if self._proc else None
        tail = b"".join(self._stderr[-20:]).decode(errors="replace").strip()
        return RuntimeError(f"METEOR (java) stopped while {what} (exit code {code}): {tail or 'no stderr'}")

    def _exchange(self, lines: List[str], n_answers: int, what: str) -> List[str]:
        errors: List[BaseException] = []

        def write():
            try:
                for line in lines:
                    self._proc.stdin.write((line + "\n").encode("utf-8"))
                self._proc.stdin.flush()
            except (BrokenPipeError, OSError) as exc:  # reported by the reader with Java's stderr
                errors.append(exc)

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        answers = []
        for _ in range(n_answers):
            line = self._proc.stdout.readline()
            if not line:
                writer.join(1)
                raise self._died(what)
            answers.append(line.decode("utf-8", errors="replace").strip())
        writer.join(self.timeout)
        if errors:
            raise self._died(what)
        return answers

    def score(self, hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> Tuple[float, List[float]]:
        if len(hyps) != len(refs):
            raise ValueError(f"refs must hold one list of references per hypothesis: {len(hyps)} hyps, "
                             f"{len(refs)} refs")
        if any(len(r) == 0 for r in refs):
            raise ValueError("refs must hold at least one reference per hypothesis")
        if not hyps:
            return 0.0, []
        with self._lock:
            self._start()
            score_lines = ["SCORE ||| " + " ||| ".join(_clean(r) for r in rs) + " ||| " + _clean(h)
                           for h, rs in zip(hyps, refs)]
            stats = self._exchange(score_lines, len(hyps), "computing statistics")
            answers = self._exchange(["EVAL ||| " + " ||| ".join(stats)], len(hyps) + 1, "scoring")
            try:
                values = [float(a) for a in answers]
            except ValueError as exc:
                raise RuntimeError(f"METEOR returned an unexpected answer: {answers[:3]}") from exc
        return values[-1], values[:-1]

    def close(self):
        with self._lock:
            if self._proc is not None:
                try:
                    self._proc.stdin.close()
                except OSError:
                    pass
                try:
                    self._proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
                self._proc = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing left to clean up reliably
            pass
