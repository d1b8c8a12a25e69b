"""A run's log: one CSV file per kind of row (`train.csv`, `val.csv`) and TensorBoard scalars.

Shared by `smartclip.train` and the synthetic fits (`smartclip.fit`). A row is
`{"step": s, name: value, ...}`; a kind's columns are fixed by its first row. Resuming at step s
drops rows after s (written before a crash) and purges TensorBoard events after s.
"""

from __future__ import annotations

import csv
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter


class RunLog:
    """Per-step CSV files and TensorBoard scalars under `run_dir`; a disabled log (ranks other
    than 0) writes nothing."""

    def __init__(self, run_dir: Path, enabled: bool = True, start_step: int = 0) -> None:
        self.run_dir, self.enabled = Path(run_dir), enabled
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for kind in ("train", "val"):
            path = self.run_dir / f"{kind}.csv"
            if path.exists():
                with path.open(newline="") as fh:
                    rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= start_step]
                    columns = list(rows[0]) if rows else None
                path.unlink()
                if columns:
                    self._append(kind, rows, columns)
        self.tb = SummaryWriter(self.run_dir / "tensorboard", purge_step=start_step + 1)

    def _append(self, kind: str, rows: list[dict], columns: list[str]) -> None:
        path = self.run_dir / f"{kind}.csv"
        new = not path.exists()
        with path.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            if new:
                writer.writeheader()
            writer.writerows(rows)

    def write(self, kind: str, step: int, values: dict[str, float]) -> None:
        """Append a row of `kind` at `step` and its scalars (as `kind/name`)."""
        if not self.enabled:
            return
        self._append(kind, [{"step": step, **values}], ["step", *values])
        for key, value in values.items():
            self.tb.add_scalar(f"{kind}/{key}", value, step)
        self.tb.flush()

    def close(self) -> None:
        if self.enabled:
            self.tb.close()
