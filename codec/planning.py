"""Planning a training recipe: time budgets, the estimate line, dry runs, size checks.

A video codec describes its recipe before training (:class:`Recipe`: the phases with
their requested epochs and steps per epoch, and what the file will roughly hold) and
passes one :class:`SchedulePlanner` to every phase's :func:`~nnc.codec.training.fit`.
After a few calibration steps of the first phase the planner knows the time per step:

* it prints one estimate line (the requested recipe's time, or the planned epochs under
  a budget, with advice when an unbudgeted run would take over an hour);
* with a time budget it scales every phase's epochs by one factor so that the whole
  recipe ends within the budget; the loop then lays its warm-up + cosine schedule over
  the planned length (not a cosine cut off by the clock).  Should the measured pace drift
  from the calibrated one (a busy machine), the remaining epochs are planned again with
  the pace measured since calibration.  The budget also stays a hard stop (the planner is
  a :class:`~nnc.codec.training_hooks.TimeBudget`);
* with ``dry_run`` it raises :class:`PlanOnly` carrying the plan, before any file is written.

The plan (the scale factor and the calibrated time per step) is part of the planner's
checkpoint state, so a resumed run follows the plan it started with.

PFNR's sessions (one video each, trained one after another with quantizing and a check
decode in between) share one :class:`SessionPlanner`: one budget for all of them, each
session calibrated on its own steps and the rest planned again as each session starts.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

from ..errors import NncError
from ..fileio import human_size
from ..units import plural
from .training_hooks import TimeBudget, TrainingRun

CALIBRATION_STEPS = 4  # timed steps after the first one (which pays one-off costs)
CALIBRATION_SHARE = 0.1  # at most this share of a budget is spent before the plan is made
PLAN_FRACTION = 0.9  # plan to end at 90% of the budget: later phases may be a little slower per step
LONG_RUN_SECONDS = 3600.0
# Re-planning under a budget: the machine may slow down after calibration (another job starts)
# or speed up again.  Every REPLAN_EVERY of the budget (once MIN_REPLAN_STEPS steps ran) the
# pace of that last stretch is measured; when it projects an end more than REPLAN_DEVIATION
# of the budget away from the planned one, every remaining epoch is planned again, so the
# last phases (pruning fine-tune, quantization-aware) still run instead of being cut by the
# hard stop, and a run that sped up does not end early.  (The pace since calibration, used
# at first, let a slow stretch hold a run that had sped up to an end 25% before its budget.)
REPLAN_DEVIATION = 0.03
REPLAN_EVERY = 0.05
MIN_REPLAN_STEPS = 20
SECONDS_PER_UNIT = {"s": 1, "m": 60, "h": 3600}


def parse_duration(value) -> float:
    """``90s``, ``20m``, ``2h``, ``1.5h`` or a number of seconds -> seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip().lower()
        unit = text[-1:] if text[-1:] in SECONDS_PER_UNIT else "s"
        number = text[:-1] if text[-1:] in SECONDS_PER_UNIT else text
        try:
            seconds = float(number) * SECONDS_PER_UNIT[unit]
        except ValueError:
            raise NncError(f"--time-budget {value!r}: expected a duration like 90s, 20m or 2h") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise NncError(f"--time-budget {value!r}: must be a positive duration")
    return seconds


def format_duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.3g} min"
    return f"{seconds / 3600:.3g} h"


# The model size when --params is not given follows the input: about DEFAULT_TARGET_BPP bits
# per pixel at 8 bits a parameter, HNeRV's published bunny setting (1.5M parameters for 132
# frames of 1280x720, ~0.1 bpp), kept within [SMALLEST_DEFAULT_SIZE, LARGEST_DEFAULT_SIZE].
# A fixed 1.5M gave a 10-frame 160x90 clip about 80 bpp, far more than its raw size.
DEFAULT_TARGET_BPP = 0.1
SMALLEST_DEFAULT_SIZE = 2e4
LARGEST_DEFAULT_SIZE = 1.5e6
DEFAULT_SIZE_HELP = ("default: about 0.1 bpp of the input at 8 bits a parameter, between 20k and 1.5M; "
                     "--dry-run shows the choice")


def default_model_size(num_frames: int, height: int, width: int, bits_per_parameter: int = 8,
                       target_bpp: float = DEFAULT_TARGET_BPP) -> float:
    """Parameters for about ``target_bpp`` (a preset's size target; DEFAULT_TARGET_BPP without
    one) bits per pixel of a ``num_frames`` x ``height`` x ``width`` video.  Rate targets
    (``--bpp``) size the model in :func:`nnc.codec.rate_target.choose_model_size`."""
    wanted = target_bpp * num_frames * height * width / bits_per_parameter
    return float(round(min(max(wanted, SMALLEST_DEFAULT_SIZE), LARGEST_DEFAULT_SIZE), -3))


def pruned_bits_per_parameter(weight_bits: int, prune: float) -> float:
    """Stored bits a weight costs before entropy coding once ``prune`` of the weights are
    removed: the kept values' bits, plus at most a bit per weight for the coded masks."""
    return weight_bits * (1 - prune) + (1 if prune > 0 else 0)


def first_solvable_size(solve: Callable[[float], object], size: float, largest: float = LARGEST_DEFAULT_SIZE) -> float:
    """``size``, or the next size up (25% steps, at most ``largest``) that ``solve``
    accepts: a tiny clip's target can be below the smallest network of its frame size."""
    while True:
        try:
            solve(size)
            return size
        except ValueError:
            if size >= largest:
                raise
            size = float(min(max(round(size * 1.25, -3), size + 1000.0), largest))


def raw_bits_per_pixel(pix_fmt: str, bit_depth: int) -> float:
    """Bits per pixel of the source's raw frames (4:2:0: 1.5 samples a pixel, 4:4:4/RGB 3, gray 1)."""
    if pix_fmt.startswith("gray"):
        samples = 1.0
    elif "420" in pix_fmt:
        samples = 1.5
    elif "422" in pix_fmt:
        samples = 2.0
    else:
        samples = 3.0
    return samples * bit_depth


@dataclass
class Phase:
    name: str  # the TrainSettings.phase of its fit calls
    epochs: int  # requested epochs (of every run of this phase: NIRVANA has one run per group)
    steps_per_epoch: int
    runs: int = 1

    @property
    def steps(self) -> int:
        return self.epochs * self.steps_per_epoch * self.runs


@dataclass
class Recipe:
    """What a codec will train and store, known before training."""

    model: str
    phases: list[Phase]
    parameters: int  # what the file stores, in values (weights, embeddings, grids)
    stored_bits: float | None  # upper estimate of the payload: values x their bits (None: rate-trained)
    pixels: int  # frames x height x width
    raw_bits: float  # the source video uncompressed
    size_is_target: bool = False  # stored_bits is a rate target (--bpp/--bitrate), not an upper estimate

    @property
    def steps(self) -> int:
        return sum(phase.steps for phase in self.phases)

    def estimated_bpp(self) -> float | None:
        return None if self.stored_bits is None else self.stored_bits / self.pixels


def video_recipe(model: str, video, phases: list[Phase], parameters: int, stored_bits: float | None,
                 size_is_target: bool = False) -> Recipe:
    """A :class:`Recipe` for ``video`` (its pixels and raw size from its frames and pixel format)."""
    num_frames, height, width = video.frames.shape[:3]
    pixels = num_frames * height * width
    return Recipe(model, phases, int(parameters), stored_bits, pixels,
                  pixels * raw_bits_per_pixel(video.info.pix_fmt, video.info.bit_depth), size_is_target)


class PlanOnly(Exception):
    """Raised by a dry run once the plan is known: nothing is trained further or written."""

    def __init__(self, plan: dict):
        super().__init__(plan.get("text", "dry run"))
        self.plan = plan


REFUSE_ABOVE_RAW = 2.0  # refuse (without --force) above this multiple of the raw video; warn between 1x and it


def check_file_size(recipe: Recipe, force: bool, log: Callable[[str], None]) -> None:
    """Warn when the file would be larger than the raw video; refuse (unless ``force``) when
    it would be over REFUSE_ABOVE_RAW times larger."""
    if recipe.stored_bits is None or recipe.stored_bits <= recipe.raw_bits:
        return
    message = (f"{recipe.model} with {recipe.parameters:,} parameters would store about "
               f"{human_size(recipe.stored_bits / 8)} ({recipe.estimated_bpp():.2f} bpp), more than the raw video's "
               f"{human_size(recipe.raw_bits / 8)} ({recipe.raw_bits / recipe.pixels:.1f} bpp)")
    # The estimate is an upper bound (parameters x bits before entropy coding, which saves
    # ~10-25% on trained weights): refuse only when it is clearly larger, warn near the line.
    if not force and recipe.stored_bits > REFUSE_ABOVE_RAW * recipe.raw_bits:
        raise NncError(message + ": choose a smaller --params, or --force to encode anyway")
    log(f"nnc: warning: {message}")


def log_line(text: str) -> None:
    """Print one line on stderr without breaking a progress bar."""
    try:
        from tqdm.auto import tqdm

        tqdm.write(text, file=sys.stderr)
    except ImportError:  # pragma: no cover - tqdm is a dependency
        print(text, file=sys.stderr)


class SchedulePlanner(TimeBudget):
    """Calibrates, estimates and (with a budget) plans the recipe; see the module docstring."""

    def __init__(self, recipe: Recipe, budget_seconds: float | None = None, *, dry_run: bool = False,
                 log: Callable[[str], None] | None = log_line, calibration_steps: int = CALIBRATION_STEPS):
        super().__init__(math.inf if budget_seconds is None else budget_seconds)
        self.recipe, self.budget, self.dry_run, self.log = recipe, budget_seconds, dry_run, log
        self.calibration_steps = calibration_steps
        self.scale: float | None = None  # planned epochs = requested x scale (None until calibrated)
        self.seconds_per_step: float | None = None
        self.steps_done = 0  # steps of runs that finished
        self._first_step_seconds: float | None = None
        self.line = ""  # the estimate line, once printed
        # (steps done, seconds used) where the pace's last stretch began (the plan was made or
        # last checked): that stretch's pace decides whether the plan still fits
        self._calibrated_at: tuple[int, float] | None = None
        self.replans = 0

    # -- the loop's planning hooks --------------------------------------------------
    def planned_epochs(self, requested: int) -> int:
        """``requested`` epochs as the plan scales them (themselves until a budget's plan is made)."""
        if self.scale is None or self.budget is None:
            return requested
        return max(1, round(requested * self.scale))

    def phase_epochs(self, phase: str, requested: int) -> int:
        """Epochs of a run that is about to start (requested ones until the plan is made)."""
        return self.planned_epochs(requested)

    def revise_epochs(self, run: TrainingRun, epochs: int, requested: int) -> int:
        """After each step: once calibrated, the current run's planned epochs."""
        if self.scale is not None:
            if self.budget is not None and self._replan(run):
                return self.phase_epochs(run.phase, requested)
            return epochs
        pace = self._calibrated_pace(run, self.used(run))
        if pace is None:
            return epochs
        self.seconds_per_step = pace
        self._make_plan(run)
        return self.phase_epochs(run.phase, requested)

    def _calibrated_pace(self, run: TrainingRun, elapsed: float) -> float | None:
        """The run's time per step once its calibration steps are timed, else None (call
        after every step).  The first step pays one-off costs and is left out.  ``elapsed``
        is the budget time spent so far: calibration ends sooner when it reaches
        CALIBRATION_SHARE of the budget."""
        if run.step == 1 and self._first_step_seconds is None:
            self._first_step_seconds = run.seconds
        timed = run.step - 1
        # Calibrate after a few steps, or sooner when the run ends or slow steps would
        # spend a tenth of the budget on calibration alone.
        hurry = self.budget is not None and elapsed >= CALIBRATION_SHARE * self.budget
        if timed < self.calibration_steps and run.step < run.total_steps and not hurry:
            return None
        if timed > 0 and self._first_step_seconds is not None:
            return max((run.seconds - self._first_step_seconds) / timed, 1e-6)
        return max(run.seconds / max(run.step, 1), 1e-6)

    def _make_plan(self, run: TrainingRun) -> None:
        if self.budget is None:
            self.scale = 1.0
        else:
            self.scale = self._fitting_scale(run, self.seconds_per_step)
            self._calibrated_at = (self.steps_done + run.step, self.used(run))
        plan = self.plan()
        self.line = plan["text"]
        if self.log is not None:
            self.log(self.line)
        if self.dry_run:
            raise PlanOnly(plan)

    def _fitting_scale(self, run: TrainingRun, per_step: float) -> float:
        """The scale of the requested epochs that ends the recipe at PLAN_FRACTION of the
        budget when the remaining steps take ``per_step`` seconds each."""
        done = self.steps_done + run.step
        available = self._planned_end(run.phase) - self.used(run)
        return max(done + max(available, 0.0) / per_step, 1.0) / max(self.recipe.steps, 1)

    def _planned_end(self, phase: str) -> float:
        """The budget time at which the plan made during ``phase`` should end."""
        return self.budget * PLAN_FRACTION

    def _remaining_steps(self, run: TrainingRun) -> float:
        """Steps the current plan still holds, from where ``run`` stands."""
        return max(self.scale * self.recipe.steps - (self.steps_done + run.step), 0.0)

    def _replan(self, run: TrainingRun) -> bool:
        """Plan the remaining epochs again when the pace of the last stretch has drifted."""
        if self._calibrated_at is None:
            return False
        used, done = self.used(run), self.steps_done + run.step
        steps_then, used_then = self._calibrated_at
        if done - steps_then < MIN_REPLAN_STEPS or used - used_then < REPLAN_EVERY * self.budget:
            return False
        pace = (used - used_then) / (done - steps_then)
        self._calibrated_at = (done, used)  # the next stretch starts here
        projected = used + self._remaining_steps(run) * pace
        if abs(projected - self._planned_end(run.phase)) <= REPLAN_DEVIATION * self.budget:
            return False
        planned_pace, self.seconds_per_step = self.seconds_per_step, pace
        self.scale = self._fitting_scale(run, pace)
        self.replans += 1
        if self.log is not None:
            epochs = " + ".join(f"{name} {count}" for name, count in self.plan()["epochs"].items() if count > 0)
            self.log(f"nnc: re-planned after {format_duration(used)}: {pace:.3g} s/step measured lately "
                     f"({planned_pace:.3g} planned); epochs now {epochs}, to fit the "
                     f"{format_duration(self.budget)} time budget")
        return True

    def plan(self) -> dict:
        """The plan as data and as the one estimate line."""
        recipe = self.recipe
        epochs = {p.name: (self.planned_epochs(p.epochs) if p.epochs > 0 and p.runs > 0 else 0) for p in recipe.phases}
        steps = sum(epochs[p.name] * p.steps_per_epoch * p.runs for p in recipe.phases)
        seconds = steps * (self.seconds_per_step or 0.0)
        phases_text = " + ".join(f"{name} {count}" for name, count in epochs.items() if count > 0)
        runs = {p.name: p.runs for p in recipe.phases if p.runs > 1}
        if runs:
            phases_text += " (per group)"
        text = (f"nnc: estimate: {recipe.model}, {plural(recipe.parameters, 'parameter')}, {plural(steps, 'step')} "
                f"(epochs: {phases_text}) at {self.seconds_per_step or 0:.3g} s/step: about {format_duration(seconds)}")
        if self.budget is not None:
            text += f" (planned to fit the {format_duration(self.budget)} time budget)"
        elif seconds > LONG_RUN_SECONDS:
            text += ("; to finish sooner: --time-budget 20m, fewer frames (--frames N), a smaller --params, "
                     "or a GPU (--device cuda)")
        bpp = recipe.estimated_bpp()
        return {"model": recipe.model, "parameters": recipe.parameters, "epochs": epochs, "steps": steps,
                "seconds_per_step": self.seconds_per_step, "estimated_seconds": seconds,
                "time_budget": self.budget, "estimated_bpp": bpp,
                "estimated_bytes": None if recipe.stored_bits is None else math.ceil(recipe.stored_bits / 8),
                "size_is_target": recipe.size_is_target,
                "raw_bytes": math.ceil(recipe.raw_bits / 8), "text": text}

    # -- TimeBudget + checkpoint state -------------------------------------------------
    def finish(self, run: TrainingRun) -> None:
        super().finish(run)
        self.steps_done += run.step

    def state_dict(self) -> dict:
        return dict(super().state_dict(), scale=self.scale, seconds_per_step=self.seconds_per_step,
                    steps_done=self.steps_done, calibrated_at=self._calibrated_at, replans=self.replans)

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.scale = None if state.get("scale") is None else float(state["scale"])
        self.seconds_per_step = None if state.get("seconds_per_step") is None else float(state["seconds_per_step"])
        self.steps_done = int(state.get("steps_done", 0))
        calibrated = state.get("calibrated_at")
        self._calibrated_at = None if calibrated is None else (int(calibrated[0]), float(calibrated[1]))
        self.replans = int(state.get("replans", 0))


class SessionPlanner(SchedulePlanner):
    """Plans runs trained one after another, with other work in between, into one budget:
    PFNR's sessions (each trains, then is quantized and checked by decoding it).

    Each phase of the recipe is one run, in order, and every run passes its phase's name
    to the loop.  What differs from one video's phases:

    * the budget is wall time from the first training step of the first run: the work
      between runs happens before the later runs train, so it is counted, and the latest
      such gap is set aside for each gap still to come;
    * every run calibrates its own time per step on its first steps (the first run's
      calibration prints the estimate line and ends a dry run); runs not started yet are
      costed at the latest calibrated pace;
    * a plan scales the requested epochs of the runs not finished yet by one factor so
      that they fill what is left of the budget; finished runs count as the time they
      took.  A plan is made again at the start of every run, from the time actually
      spent, after each run's calibration, and when the pace drifts (as for one video).

    No checkpoint state beyond :class:`SchedulePlanner`'s: the runs are not resumable
    (``--resume`` is refused for PFNR, whose sessions are short).
    """

    def __init__(self, recipe: Recipe, budget_seconds: float | None = None, **kwargs):
        super().__init__(recipe, budget_seconds, **kwargs)
        self._index = {phase.name: index for index, phase in enumerate(recipe.phases)}
        self.sessions: dict[str, dict] = {}  # phase name -> what its run was given and what it did
        self.gap_seconds = 0.0  # the latest wall time between the end of a run and the start of the next
        self._current: str | None = None
        self._finished_at: float | None = None
        self._calibrated_phases: set[str] = set()

    def phase_epochs(self, phase: str, requested: int) -> int:
        if phase != self._current:  # the loop asks first thing for a new run
            self._begin(phase)
        return super().phase_epochs(phase, requested)

    def _begin(self, phase: str) -> None:
        """A new run: count the work since the last one, plan the rest from the time spent."""
        if self._finished_at is not None:
            self.gap_seconds = time.perf_counter() - self._finished_at
            self.spent += self.gap_seconds
            self._finished_at = None
        self._current, self._first_step_seconds = phase, None
        if self.budget is not None and self.scale is not None:
            self.scale = self._scale_for_rest(phase, 0, self.seconds_per_step, self.spent)
            self._calibrated_at = (self.steps_done, self.spent)
        available = None if self.budget is None else max(self._planned_end(phase) - self.spent, 0.0)
        self.sessions[phase] = {"started_after_seconds": self.spent, "available_seconds": available}

    def revise_epochs(self, run: TrainingRun, epochs: int, requested: int) -> int:
        if self.scale is None:  # the first run: the estimate line (and a dry run's end)
            revised = super().revise_epochs(run, epochs, requested)
            if self.scale is not None:
                self._calibrated(run.phase)
            return revised
        if run.phase in self._calibrated_phases:  # only a drifting pace re-plans now
            return super().revise_epochs(run, epochs, requested)
        # A later run's own calibration; the earlier runs' time counts as spent, so
        # only this run's time decides whether calibration must end sooner.
        pace = self._calibrated_pace(run, run.seconds)
        if pace is None:
            return epochs
        self.seconds_per_step = pace
        self._calibrated(run.phase)
        if self.budget is None:
            return epochs
        self.scale = self._fitting_scale(run, pace)
        self._calibrated_at = (self.steps_done + run.step, self.used(run))
        return self.phase_epochs(run.phase, requested)

    def _calibrated(self, phase: str) -> None:
        self._calibrated_phases.add(phase)
        self.sessions.setdefault(phase, {})["seconds_per_step"] = self.seconds_per_step

    def _planned_end(self, phase: str) -> float:
        later = len(self.recipe.phases) - 1 - self._index[phase]
        return self.budget * PLAN_FRACTION - self.gap_seconds * later

    def _scale_for_rest(self, phase: str, steps_in_run: int, per_step: float, used: float) -> float:
        """The scale of the requested epochs of ``phase`` (which has run ``steps_in_run``
        steps) and the phases after it that ends them at the planned end."""
        requested = sum(p.steps for p in self.recipe.phases[self._index[phase]:])
        available = max(self._planned_end(phase) - used, 0.0)
        return max(steps_in_run + available / per_step, 1.0) / max(requested, 1)

    def _fitting_scale(self, run: TrainingRun, per_step: float) -> float:
        return self._scale_for_rest(run.phase, run.step, per_step, self.used(run))

    def _remaining_steps(self, run: TrainingRun) -> float:
        planned = sum(self.planned_epochs(p.epochs) * p.steps_per_epoch * p.runs
                      for p in self.recipe.phases[self._index[run.phase]:])
        return max(planned - run.step, 0.0)

    def finish(self, run: TrainingRun) -> None:
        super().finish(run)
        phase = self.recipe.phases[self._index[run.phase]]
        self.sessions.setdefault(run.phase, {}).update(
            epochs=math.ceil(run.total_steps / max(phase.steps_per_epoch * phase.runs, 1)), steps=run.step,
            seconds=run.seconds, stopped_early=run.step < run.total_steps)
        self._finished_at = time.perf_counter()

    def plan(self) -> dict:
        """The plan as data (``sessions``: one record per run, finished ones as they ran) and
        as the one estimate line."""
        recipe, per_step = self.recipe, self.seconds_per_step or 0.0
        sessions = []
        for phase in recipe.phases:
            record = self.sessions.get(phase.name, {})
            finished = "steps" in record
            epochs = record["epochs"] if finished else self.planned_epochs(phase.epochs)
            steps = record["steps"] if finished else epochs * phase.steps_per_epoch * phase.runs
            pace = record.get("seconds_per_step") or per_step
            sessions.append({"phase": phase.name, "requested_epochs": phase.epochs, "epochs": epochs, "steps": steps,
                             "seconds_per_step": pace, "finished": finished,
                             "seconds": record["seconds"] if finished else steps * pace,
                             "started_after_seconds": record.get("started_after_seconds"),
                             "available_seconds": record.get("available_seconds"),
                             "stopped_early": record.get("stopped_early", False)})
        steps = sum(session["steps"] for session in sessions)
        seconds = sum(session["seconds"] for session in sessions)
        epochs_text = " + ".join(f"{session['phase']} {session['epochs']}" for session in sessions)
        text = (f"nnc: estimate: {recipe.model}, {plural(recipe.parameters, 'parameter')}, "
                f"{plural(len(sessions), 'session')}, {plural(steps, 'step')} (epochs: {epochs_text}) at "
                f"{per_step:.3g} s/step: about {format_duration(seconds)}")
        if self.budget is not None:
            text += f" (planned to fit the {format_duration(self.budget)} time budget)"
        elif seconds > LONG_RUN_SECONDS:
            text += "; to finish sooner: --time-budget 20m, fewer frames (--frames N), fewer --epochs, or a GPU (--device cuda)"
        return {"model": recipe.model, "parameters": recipe.parameters,
                "epochs": {session["phase"]: session["epochs"] for session in sessions}, "steps": steps,
                "seconds_per_step": self.seconds_per_step, "estimated_seconds": seconds, "time_budget": self.budget,
                "estimated_bpp": recipe.estimated_bpp(),
                "estimated_bytes": None if recipe.stored_bits is None else math.ceil(recipe.stored_bits / 8),
                "size_is_target": recipe.size_is_target,
                "raw_bytes": math.ceil(recipe.raw_bits / 8), "sessions": sessions, "text": text}


@dataclass
class PlanReport:
    """What a dry run returns instead of an EncodeReport (nothing was written)."""

    plan: dict
    settings: dict = field(default_factory=dict)

    def summary(self) -> str:
        plan = self.plan
        bpp = "n/a (rate-trained)" if plan["estimated_bpp"] is None else (
            f"at most about {plan['estimated_bpp']:.3f} bpp ({plan['estimated_bytes']:,} bytes"
            + (", the rate target)" if plan.get("size_is_target") else " before entropy coding)"))
        epochs = ", ".join(f"{name} {count}" for name, count in plan["epochs"].items() if count > 0)
        budget = "" if plan["time_budget"] is None else f", time budget {format_duration(plan['time_budget'])}"
        return (f"dry run (nothing written): model {plan['model']}, {plural(plan['parameters'], 'parameter')}, "
                f"epochs {epochs} ({plural(plan['steps'], 'step')}){budget}, estimated training time "
                f"{format_duration(plan['estimated_seconds'])}, estimated size {bpp}; raw video "
                f"{plan['raw_bytes']:,} bytes")


def make_planner(options, recipe: Recipe) -> SchedulePlanner:
    """The planner a codec passes to each phase, from its options (``time_budget``,
    ``dry_run``, ``force``, ``show_progress``); checks the file size first."""
    log = log_line if getattr(options, "show_progress", True) else None
    check_file_size(recipe, bool(getattr(options, "force", False)), log or log_line)
    budget = getattr(options, "time_budget", None)
    return SchedulePlanner(recipe, None if budget is None else parse_duration(budget),
                           dry_run=bool(getattr(options, "dry_run", False)), log=log)


def make_session_planner(options, recipe: Recipe) -> SessionPlanner:
    """The planner of runs trained one after another (PFNR's sessions), from the options
    (``time_budget``, ``dry_run``, ``show_progress``).  The size estimate is shown, never
    refused as :func:`make_planner` does: a set's upper estimate counts a mask bit per
    weight per session, which entropy coding mostly removes, and sets have no --force."""
    budget = getattr(options, "time_budget", None)
    return SessionPlanner(recipe, None if budget is None else parse_duration(budget),
                          dry_run=bool(getattr(options, "dry_run", False)),
                          log=log_line if getattr(options, "show_progress", True) else None)
