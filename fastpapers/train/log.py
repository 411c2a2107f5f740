"""Metrics to JSONL (the record of truth), CSV, and TensorBoard when it is installed.

``metrics.jsonl`` holds one JSON object per line, ``{"step": s, name: value, ...}``; it is
appended to as training runs, so a kill can tear its last line. Reading tolerates that: a last
line that is not valid JSON (or has no newline) is dropped, and :meth:`MetricLogger.truncate`
rewrites the file without it. A damaged line *before* the last is real corruption and raises
a ``ValueError`` naming the file and the line. ``metrics.csv`` is derived from the JSONL and
rewritten whenever its columns change or the log is truncated.
"""
import csv
import json
import os
from typing import Dict, List, Optional

from .checkpoint import CorruptFileError, atomic_write


def read_records(path: str) -> List[Dict]:
    """The records of a ``metrics.jsonl``; a torn last line is dropped (see the module docstring)."""
    if not os.path.isfile(path):
        return []
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    records = []
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        last = i == len(lines) - 1 or (i == len(lines) - 2 and not lines[-1].strip())
        try:
            rec = json.loads(raw.decode("utf-8"))
            if not isinstance(rec, dict) or not isinstance(rec.get("step"), int):
                raise ValueError("not a {\"step\": int, ...} record")
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            if last:
                break  # torn by a kill in the middle of a write
            raise CorruptFileError(f"{path}: line {i + 1} is not a metrics record ({exc}); "
                                   f"remove or fix that line to continue the run") from exc
        records.append(rec)
    return records


class MetricLogger:
    """Append ``{"step": s, name: value, ...}`` records to ``metrics.jsonl`` and ``metrics.csv``.

    The CSV's columns are the union of every key seen; when a record brings a new key the CSV
    is rewritten from the JSONL. ``truncate(step)`` drops records after ``step`` (and a torn
    last line), so a run resumed from the checkpoint of step ``step`` ends with the same log
    as a run that was never interrupted.
    """

    def __init__(self, out_dir: str, *, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.jsonl = os.path.join(out_dir, "metrics.jsonl")
        self.csv = os.path.join(out_dir, "metrics.csv")
        self._columns: Optional[List[str]] = None
        self._checked = False
        self._tb = None
        self._want_tb = tensorboard and enabled
        self._tb_dir = os.path.join(out_dir, "tb")
        if enabled:
            os.makedirs(out_dir, exist_ok=True)

    def _writer(self):
        # Opened on first use and again after close(), so a trainer can fit() more than once.
        if self._tb is None and self._want_tb:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                self._want_tb = False
                return None
            self._tb = SummaryWriter(self._tb_dir)
        return self._tb

    def records(self) -> List[Dict]:
        return read_records(self.jsonl)

    def truncate(self, step: int) -> None:
        """Keep the records with ``step <= step``; rewrite both files (atomically)."""
        if not self.enabled:
            return
        kept = [r for r in self.records() if r["step"] <= step]
        text = "".join(json.dumps(r) + "\n" for r in kept)
        atomic_write(self.jsonl, lambda f: f.write(text.encode("utf-8")), checksum=False)
        self._rewrite_csv(kept)
        self._checked = True

    def _rewrite_csv(self, records: List[Dict]) -> None:
        cols: List[str] = []
        for r in records:
            cols.extend(k for k in r if k not in cols)
        self._columns = cols

        def write(f):
            import io
            buf = io.StringIO(newline="")
            w = csv.DictWriter(buf, fieldnames=cols)
            w.writeheader()
            w.writerows(records)
            f.write(buf.getvalue().encode("utf-8"))

        atomic_write(self.csv, write, checksum=False)

    def _repair(self) -> None:
        # Appending after a torn line would glue the new record onto it, and a kill between the
        # JSONL and the CSV write leaves the CSV a row short: rewrite both once before appending.
        if os.path.isfile(self.jsonl):
            self.truncate(max((r["step"] for r in self.records()), default=0))

    def log(self, step: int, metrics: Dict[str, float]) -> None:
        if not self.enabled:
            return
        if not self._checked:
            self._repair()
            self._checked = True
        record = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._columns is None and os.path.isfile(self.csv):
            with open(self.csv, newline="") as f:
                self._columns = next(csv.reader(f), [])
        if self._columns is None or any(k not in self._columns for k in record):
            self._rewrite_csv(self.records())
        else:
            with open(self.csv, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=self._columns).writerow(record)
        tb = self._writer()
        if tb is not None:
            for k, v in record.items():
                if k != "step":
                    tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
