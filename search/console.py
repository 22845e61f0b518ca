"""What the user watches during a search: one live view on a terminal, plain event lines elsewhere.

:class:`LiveConsole` is a Ray Tune callback in the driver. It keeps, per trial, the config's searched
values, the last and best value of the metric (in the metric's registered direction), the epoch and
the outcome, and shows:

- on a terminal (stdout is a TTY): one block, redrawn in place at most once a second, with trials
  finished out of the budget, elapsed time and an ETA, the best trial and the baseline with their
  configs, and a compact table of the running and most recent trials. Event lines (a failed trial)
  are printed above the block, and anything else written to stdout or stderr while it is shown (a
  worker's log line, an error Ray logs) first erases the block, so no output is ever overwritten
  (see :func:`guard_terminal`);
- elsewhere (a log file, Modal's logs): one plain line per event (trial started, pruned, finished,
  failed; a new best) and a status line every :data:`STATUS_EVERY_S` seconds. No carriage returns,
  no escape codes.

Ray's own per-trial output is switched off at its source by the driver (``RunConfig(verbose=0)``,
see :mod:`search.tuner`); ``--console verbose`` (``-v``) brings it back instead of this view, and
``--console quiet`` (``-q``) shows neither: only the final summary, and errors.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from ray import tune

from nsm import metrics as nsm_metrics
from nsm.config import holds_values
from search.outcome import COMPLETED, ERROR, PRUNED, trial_outcome

LIVE, VERBOSE, QUIET = "live", "verbose", "quiet"
CONSOLE_MODES = (LIVE, VERBOSE, QUIET)
STATUS_EVERY_S = 30.0  # plain output: a status line this often
REDRAW_EVERY_S = 1.0  # terminal: at most one redraw this often (events redraw at once)
RECENT_ROWS = 4  # finished trials kept in the terminal table below the running ones
MAX_ROWS = 12

RUNNING = "running"


@dataclass
class _TrialView:
    trial_id: str
    values: dict[str, Any]
    is_baseline: bool
    epoch: int = 0
    last: float = math.nan
    best: float = math.nan
    best_epoch: int = 0
    status: str = RUNNING
    ended_at: float = math.inf


@dataclass
class _State:
    started: float = 0.0
    trials: dict[str, _TrialView] = field(default_factory=dict)
    finished: int = 0
    best_id: str | None = None
    last_status_line: float = 0.0
    last_draw: float = -math.inf
    drawn_lines: int = 0


class LiveConsole(tune.Callback):
    """The live view of one experiment (see the module doc); ``stream``/``tty`` are for tests.

    ``stream=None`` writes to whatever ``sys.stdout`` is at the time (the Tuner pickles its callbacks,
    so no stream is kept on a real search).
    """

    def __init__(self, name: str, metric: str, num_samples: int, max_epochs: int, searched_keys: list[str],
                 baseline: dict[str, Any], stream: TextIO | None = None, tty: bool | None = None,
                 clock: Any = time.monotonic, width: int | None = None) -> None:
        self.name = name
        self.metric = metric
        self.mode = nsm_metrics.mode(metric)
        self.num_samples = num_samples
        self.max_epochs = max_epochs
        self.keys = list(searched_keys)
        self.baseline = dict(baseline)
        self._stream = stream
        self._tty = tty
        self._clock = clock
        self._width = width  # None: the terminal's, at each redraw
        self._state = _State()

    # -- Ray Tune callback hooks (driver thread) ------------------------------------------------

    def setup(self, **info: Any) -> None:
        self._state = _State(started=self._clock(), last_status_line=self._clock())
        _set_active(self)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        view = self._view(trial)
        view.status = RUNNING
        if not self._is_tty():
            tag = " (baseline)" if view.is_baseline else ""
            self._line(f"trial {view.trial_id} started{tag}: {self._config_text(view.values)}")
        self._draw(force=True)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        view = self._view(trial)
        epoch, value = result.get("epoch"), result.get(self.metric)
        if isinstance(epoch, (int, float)) and math.isfinite(epoch):
            view.epoch = int(epoch)
        if isinstance(value, (int, float)):
            view.last = float(value)
            if math.isfinite(value) and (not math.isfinite(view.best) or nsm_metrics.is_better(value, view.best, self.mode)):
                view.best, view.best_epoch = float(value), view.epoch
                self._maybe_new_best(view)
        self._draw()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        view = self._view(trial)
        view.status = trial_outcome(trial.last_result, self.max_epochs)
        self._ended(view)
        if not self._is_tty():
            how = {PRUNED: f"pruned at epoch {view.epoch}", COMPLETED: f"completed {view.epoch} epochs"}.get(
                view.status, f"{view.status} at epoch {view.epoch}")
            self._line(f"trial {view.trial_id} {how}: best {self._metric_text(view.best)}")
        self._draw(force=True)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        view = self._view(trial)
        view.status = ERROR
        self._ended(view)
        # Always a line of its own, on a terminal too: a failure must stay on screen.
        where = f"{trial.path}/error.txt" if getattr(trial, "path", None) else "its error.txt"
        self._line(f"trial {view.trial_id} FAILED at epoch {view.epoch}: the error is above and in {where}")
        self._draw(force=True)

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        now = self._clock()
        if self._is_tty():
            self._draw()
        elif now - self._state.last_status_line >= STATUS_EVERY_S:
            self._line(self.status_line(now))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self._is_tty():
            self._draw(force=True)
            self._state.drawn_lines = 0  # the final view stays on screen; the summary follows it
        else:
            self._line(self.status_line(self._clock()))
        _set_active(None)

    # -- Rendering (pure: tests call these) ------------------------------------------------------

    def status_line(self, now: float, with_best: bool = True) -> str:
        """One line: trials finished / budget, running, elapsed, ETA, and (``with_best``) best and baseline."""
        state = self._state
        running = sum(view.status == RUNNING for view in state.trials.values())
        best = state.trials.get(state.best_id) if state.best_id else None
        baseline = self._baseline_view()
        parts = [f"{state.finished}/{self.num_samples} trials finished, {running} running",
                 f"elapsed {_duration(now - state.started)}, ETA {self._eta(now)}"]
        if best is not None and with_best:
            parts.append(f"best {self._metric_text(best.best)} ({best.trial_id})")
        if baseline is not None and math.isfinite(baseline.best) and with_best:
            parts.append(f"baseline {self._metric_text(baseline.best)}")
        return "; ".join(parts)

    def render(self, now: float, width: int = 100) -> list[str]:
        """The terminal block, each line cut to ``width``."""
        state = self._state
        lines = [f"{self.name}: {self.status_line(now, with_best=False)}"]  # best and baseline: the next lines
        best = state.trials.get(state.best_id) if state.best_id else None
        baseline = self._baseline_view()
        if best is not None:
            lines.append(f"  best     {self._metric_text(best.best)} at epoch {best.best_epoch}  {best.trial_id}  "
                         f"{self._config_text(best.values)}")
        else:
            lines.append("  best     -")
        if baseline is not None:
            lines.append(f"  baseline {self._metric_text(baseline.best)}  {baseline.trial_id}  {self._config_text(baseline.values)}")
        else:
            lines.append(f"  baseline (not started)  {self._config_text(self.baseline)}")
        rows = self._table_rows()
        if rows:
            key_cells = " ".join(f"{key[:12]:>12}" for key in self.keys)
            lines.append(f"  {'trial':<10} {key_cells} {'epoch':>7} {self.metric[:10]:>10} {'best':>8}  status")
            for view in rows:
                values = " ".join(f"{_value_text(view.values.get(key))[:12]:>12}" for key in self.keys)
                epoch = f"{view.epoch}/{self.max_epochs}"
                mark = " *" if view.is_baseline else ""
                lines.append(f"  {view.trial_id:<10} {values} {epoch:>7} {nsm_metrics.format_value(self.metric, view.last):>10} "
                             f"{nsm_metrics.format_value(self.metric, view.best):>8}  {view.status}{mark}")
        return [line[:width] for line in lines]

    # -- Internals --------------------------------------------------------------------------------

    def _view(self, trial: Any) -> _TrialView:
        view = self._state.trials.get(trial.trial_id)
        if view is None:
            values = {key: (trial.config or {}).get(key) for key in self.keys}
            is_baseline = bool(self.baseline) and holds_values(values, self.baseline)
            if is_baseline and any(v.is_baseline for v in self._state.trials.values()):
                is_baseline = False  # a later trial TPE happened to sample at the same point
            view = self._state.trials[trial.trial_id] = _TrialView(trial.trial_id, values, is_baseline)
        return view

    def _ended(self, view: _TrialView) -> None:
        if view.ended_at == math.inf:
            self._state.finished += 1
        view.ended_at = self._clock()

    def _maybe_new_best(self, view: _TrialView) -> None:
        state = self._state
        current = state.trials.get(state.best_id) if state.best_id else None
        if current is not None and current is not view and not nsm_metrics.is_better(view.best, current.best, self.mode):
            return
        state.best_id = view.trial_id
        if not self._is_tty():
            self._line(f"new best: {self._metric_text(view.best)} at epoch {view.best_epoch}, trial {view.trial_id} "
                       f"({self._config_text(view.values)})")

    def _baseline_view(self) -> _TrialView | None:
        return next((view for view in self._state.trials.values() if view.is_baseline), None)

    def _table_rows(self) -> list[_TrialView]:
        views = list(self._state.trials.values())
        running = [view for view in views if view.status == RUNNING]
        ended = sorted((view for view in views if view.status != RUNNING), key=lambda v: v.ended_at, reverse=True)
        return (running + ended[:RECENT_ROWS])[:MAX_ROWS]

    def _eta(self, now: float) -> str:
        finished = self._state.finished
        if finished == 0 or finished >= self.num_samples:
            return "-" if finished == 0 else "0s"
        elapsed = now - self._state.started
        return _duration(elapsed / finished * (self.num_samples - finished))

    def _metric_text(self, value: float) -> str:
        return f"{self.metric} {nsm_metrics.format_value(self.metric, value)}"

    def _config_text(self, values: dict[str, Any]) -> str:
        return " ".join(f"{key}={_value_text(values.get(key))}" for key in self.keys)

    def _out(self) -> TextIO:
        stream = self._stream or sys.stdout
        return getattr(stream, "raw_stream", stream)  # past guard_terminal's proxy: the block is ours

    def _is_tty(self) -> bool:
        if self._tty is not None:
            return self._tty
        try:
            return self._out().isatty()
        except (AttributeError, ValueError):
            return False

    def _line(self, text: str) -> None:
        """A plain event line, stamped with the elapsed time; on a terminal, printed above the block."""
        self._erase()
        out = self._out()
        out.write(f"[{_duration(self._clock() - self._state.started)}] {text}\n")
        out.flush()
        self._state.last_status_line = self._clock()

    def _draw(self, force: bool = False) -> None:
        if not self._is_tty():
            return
        now = self._clock()
        if not force and now - self._state.last_draw < REDRAW_EVERY_S:
            return
        width = self._width or max(40, shutil.get_terminal_size((100, 24)).columns - 1)
        lines = self.render(now, width)
        self._erase()
        out = self._out()
        out.write("".join(f"{line}\n" for line in lines))
        out.flush()
        self._state.drawn_lines = len(lines)
        self._state.last_draw = now

    def _erase(self) -> None:
        """Remove the block from the terminal (cursor up over its lines, clear to the end)."""
        if self._state.drawn_lines and self._is_tty():
            out = self._out()
            out.write(f"\x1b[{self._state.drawn_lines}F\x1b[J")
            out.flush()
        self._state.drawn_lines = 0


# ------------------------------------------------------------------------------------------------
# Keeping foreign output (worker logs, Ray's error logs) from being overwritten by a redraw.

_active: LiveConsole | None = None


def _set_active(console: LiveConsole | None) -> None:
    global _active
    _active = console


class _GuardedStream:
    """A stdout/stderr stand-in: a write from anyone but the live view first erases its block."""

    def __init__(self, raw_stream: TextIO) -> None:
        self.raw_stream = raw_stream

    def write(self, text: str) -> int:
        if _active is not None and text:
            _active._erase()
        return self.raw_stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw_stream, name)


@contextlib.contextmanager
def guard_terminal(enabled: bool) -> Iterator[None]:
    """While a live view may be drawn on a terminal, route stdout, stderr and the stream handlers of
    the root and ``ray`` loggers (which captured ``sys.stderr`` when Ray was imported) through
    :class:`_GuardedStream`. Nothing is filtered: every write still reaches the terminal."""
    if not enabled:
        yield
        return
    saved_out, saved_err = sys.stdout, sys.stderr
    guarded = {id(saved_out): _GuardedStream(saved_out), id(saved_err): _GuardedStream(saved_err)}
    handlers = []
    for name in (None, "ray", "ray.tune", "ray.train"):
        for handler in logging.getLogger(name).handlers:
            stream = getattr(handler, "stream", None)
            if isinstance(handler, logging.StreamHandler) and id(stream) in guarded:
                handlers.append((handler, stream))
                handler.setStream(guarded[id(stream)])
    sys.stdout, sys.stderr = guarded[id(saved_out)], guarded[id(saved_err)]
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved_out, saved_err
        for handler, stream in handlers:
            handler.setStream(stream)
        _set_active(None)


_RAY_TOKEN_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


class _TokenAuthOnNotice(logging.Filter):
    """Drops Ray's notice that it turned token authentication on, which Ray (since 2.60) logs at every
    start of a local cluster: that is its secure default, on a cluster the search starts and stops
    itself, and the notice's only advice is how to turn it off. Ray's warning that authentication is
    off still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled")


def hide_token_auth_notice() -> None:
    """Filter :class:`_TokenAuthOnNotice` at Ray's authentication logger (once per process)."""
    logger = logging.getLogger(_RAY_TOKEN_AUTH_LOGGER)
    if not any(isinstance(existing, _TokenAuthOnNotice) for existing in logger.filters):
        logger.addFilter(_TokenAuthOnNotice())


def stdout_is_terminal() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _value_text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == 0 or not math.isfinite(value):
            return str(value)
        return f"{value:.4f}" if 1e-2 <= abs(value) < 1e3 else f"{value:.2e}"
    return str(value)
