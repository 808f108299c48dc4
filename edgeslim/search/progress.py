"""What the user sees while a search runs: trials done / running / pruned / lost, best so far.

On a terminal, a live rich table; elsewhere (logs, CI, tests) one line per event
through ``echo``. Ray Tune reports trial starts, results and errors to the driver
through a ``tune.Callback``; this module turns them into those counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass
class SearchProgress:
    echo: Callable[[str], None] = lambda line: None
    live: bool = False  # a rich Live display (a terminal); else lines through echo
    unit: str = "points"
    total: int = 0
    pruned: int = 0
    done: int = 0
    running: set = field(default_factory=set)
    lost: int = 0
    rung: str = ""
    best: tuple | None = None  # (val_drop, index, name)
    names: dict = field(default_factory=dict)
    errors: dict = field(default_factory=dict)  # candidate -> why its trial ended in error
    _live: object = None

    def line(self, text: str) -> None:
        if self._live is not None:
            self._live.console.print(text)
        else:
            self.echo(text)

    def start(self) -> None:
        if self.live:
            from rich.live import Live

            self._live = Live(self._render(), refresh_per_second=2, transient=False)
            self._live.start()

    def stop(self) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.stop()
            self._live = None

    def _render(self):
        from rich.table import Table

        t = Table(title="edgeslim search", show_header=False)
        t.add_row("rung", self.rung or "-")
        t.add_row("trials", f"{self.done} done, {len(self.running)} running, {self.pruned} pruned "
                            f"before training, {self.lost} lost (of {self.total} candidates)")
        if self.best:
            t.add_row("best so far", f"{self.best[2]}: validation drop {self.best[0]:.2f} {self.unit}")
        return t

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._render())

    # -- events ------------------------------------------------------------------------
    def set_pruned(self, n: int, total: int) -> None:
        self.pruned, self.total = n, total
        self._refresh()

    def set_rung(self, text: str) -> None:
        self.rung = text
        self.line(f"[search] {text}")
        self._refresh()

    def trial_started(self, cand: int) -> None:
        self.running.add(cand)
        self._refresh()

    def trial_finished(self, cand: int, result: dict | None) -> None:
        self.running.discard(cand)
        if result is None or "val_drop" not in result:
            self.lost += 1
            self.line(f"[search] trial {self.names.get(cand, cand)} LOST (its worker died)")
        else:
            self.done += 1
            drop = float(result["val_drop"])
            if not result.get("failed") and (self.best is None or (drop, cand) < self.best[:2]):
                self.best = (drop, cand, self.names.get(cand, str(cand)))
            self.line(f"[search] {self.names.get(cand, cand)}: validation drop {drop:.2f} "
                      f"{self.unit} ({self.done} done, {len(self.running)} running; best "
                      f"{self.best[2] if self.best else '-'})")
        self._refresh()

    def tune_callback(self, rung: int):
        from ray import tune

        progress = self

        class _Callback(tune.Callback):
            # Tune may pickle its callbacks with the experiment state: keep none of ours.
            def __getstate__(self):
                return {}

            def on_trial_start(self, iteration, trials, trial, **info):
                progress.trial_started(int(trial.config["cand"]))

            def on_trial_complete(self, iteration, trials, trial, **info):
                progress.trial_finished(int(trial.config["cand"]), trial.last_result or None)

            def on_trial_error(self, iteration, trials, trial, **info):
                cand = int(trial.config["cand"])
                err = getattr(trial, "error_file", None)
                progress.errors[cand] = ("the trial's worker died or the trial raised"
                                         + (f" (Ray Tune's error file: {err})" if err else ""))
                progress.trial_finished(cand, None)

        return _Callback()
