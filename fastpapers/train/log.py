"""Metrics to JSONL (the record of truth), CSV, and TensorBoard when it is installed."""
import csv
import json
import os
from typing import Dict, List, Optional


class MetricLogger:
    """Append ``{"step": s, name: value, ...}`` records to ``metrics.jsonl`` and ``metrics.csv``.

    The CSV's columns are the union of every key seen; when a record brings a new key the CSV
    is rewritten from the JSONL. ``truncate(step)`` drops records after ``step``, so a run
    resumed from a checkpoint does not keep the lines its killed predecessor wrote after it.
    """

    def __init__(self, out_dir: str, *, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.jsonl = os.path.join(out_dir, "metrics.jsonl")
        self.csv = os.path.join(out_dir, "metrics.csv")
        self._columns: Optional[List[str]] = None
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
        if not os.path.isfile(self.jsonl):
            return []
        with open(self.jsonl) as f:
            return [json.loads(line) for line in f if line.strip()]

    def truncate(self, step: int) -> None:
        if not self.enabled:
            return
        kept = [r for r in self.records() if r["step"] <= step]
        with open(self.jsonl, "w") as f:
            for r in kept:
                f.write(json.dumps(r) + "\n")
        self._rewrite_csv(kept)

    def _rewrite_csv(self, records: List[Dict]) -> None:
        cols: List[str] = []
        for r in records:
            cols.extend(k for k in r if k not in cols)
        self._columns = cols
        with open(self.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            w.writerows(records)

    def log(self, step: int, metrics: Dict[str, float]) -> None:
        if not self.enabled:
            return
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
