"""Rate control: ``--bpp``/``--bitrate`` (rate-trained: the default, ``--lambda`` its start) adapt lambda during training.

A rate-trained codec's file size follows from lambda, which nobody knows in advance for
the size they want.  :class:`RateControl` is a training hook beside the
:class:`~nnc.codec.training_hooks.RateTerm` it steers.  After every step it averages the
file's estimated bits (an exponential moving average: one batch's estimate is noisy, e.g.
HNeRV's embeddings are priced from the batch's): the rate term's bits of the symbols plus
the side information the file holds besides them (a float32 per learned step, the
header and container).  Every few steps it multiplies lambda by
``exp(gain x (log(projected) - log(aim)))``, within LAMBDA_RANGE of the starting lambda.

``projected`` is where the bits are heading, not where they are.  Measured with a fixed
lambda (HNeRV, park_joy 160x90, 8 frames), the bits keep falling long after lambda
changes: over a 200-step run they fall from 4.25 to 2.2 bpp at lambda 1e-3, most of it
in the second half, and a controller that extrapolated the trend only 3 updates ahead
kept raising lambda while the fall was still to come, ending at 0.75-1.42 bpp for a 2 bpp
target (the steps do not grow finer again quickly).  So the current trend of the average (over
TREND_UPDATES updates) is extrapolated over the learning rate the run has left
(:func:`remaining_updates`, a cosine schedule's); late in a run nothing is left, and the
rule compares the bits themselves.  Over 2,000 steps the same clip's bits settle within
about 400 steps at a level set by lambda, and the projection then only damps.  Lambda
rises at most RISE per update and falls at most FALL: overshooting downwards costs more
(a file under the target wastes bits the landing cannot give back) than staying above it
(the landing coarsens the steps a little).

The aim sits AIM_SHARE below the target: the landing after training
(:func:`nnc.codec.rate_target.land_on_steps`) can only coarsen the steps, so a file a
little under the target is written as trained.  Its state (lambda, the average, the
trajectory) is checkpointed with the other hooks', so ``--resume`` continues with the
adapted lambda.
"""

from __future__ import annotations

import math

from .training_hooks import RateTerm, Step, TrainingHook, TrainingRun

# Updates: about UPDATES_PER_RUN per run (phase), at least MIN_UPDATE_INTERVAL steps apart
# so that the steps can react between them.
UPDATES_PER_RUN = 50
MIN_UPDATE_INTERVAL = 5
AIM_SHARE = 0.97
# Once the steps have adapted, the bits fall as about lambda**-0.3 (bunny HNeRV: lambda
# x3.75 gave 37% fewer bits; park_joy HNeRV 180k: x33, 66% fewer): a gain g then corrects
# about 0.3 g of a log error per update.  0.5 converges on that model within 2%, the
# bits lagging lambda by 20-100 steps, crossing the aim at most once
# (tests/test_rate_control.py; bits that followed lambda at once would make it zig-zag
# upwards by up to 20%: the extrapolation takes lambda's own effect for a trend), and on
# park_joy (HNeRV 57.6k, target 2 bpp; side information then counted as 1,500 bytes, 1%
# high): 200 steps from lambda 1e-4, 1e-3 and 1e-2 landed at 93%, 89% and 84% of the
# target (what a short run allows for a start 10-100x off), 2,000 steps from 1e-3 (when
# rises were extrapolated too) and 1e-2 at 95% and 90%, lambda settling at 4e-5 and 9e-5
# without oscillating.
GAIN = 0.5
TREND_UPDATES = 3
RISE = 1.2
FALL = 2.0
LAMBDA_RANGE = 1e3  # lambda stays within the starting one / 1000 .. x 1000
STEP_VALUE_BITS = 32  # a learned step is a float32 in the file
# The bytes a rate-trained file holds besides its coded symbols and steps (header with the
# encoder's record, descriptors, entropy models), measured on the tiny test clip's files
# with a rate target: HNeRV (15 tensors) 1,180, NeRV (16) 1,400, HiNeRV (56) 3,550, NeRV++
# (86) 4,390 bytes.  (rate_target.OVERHEAD_BYTES, 1,500 whatever the tensors, is 27%
# high for HNeRV and 66% low for NeRV++.)
HEADER_BYTES = 600
TENSOR_BYTES = 45
TRAJECTORY_POINTS = 8  # lambdas of the trajectory in the header's record


def update_interval(total_steps: int) -> int:
    """Steps between two updates in a run of ``total_steps``."""
    return max(MIN_UPDATE_INTERVAL, int(total_steps) // UPDATES_PER_RUN)


def remaining_updates(progress: float, updates: float) -> float:
    """How many updates at the current learning rate a run of ``updates`` updates has
    left at ``progress`` (0..1): the integral of a cosine schedule over the rest of the
    run over its current value (the steps move about as fast as their learning rate
    lets them; the warm-up is left out)."""
    now = 0.5 * (1.0 + math.cos(math.pi * progress))
    if now <= 1e-9:
        return 0.0
    left = 0.5 * (1.0 - progress) - math.sin(math.pi * progress) / (2.0 * math.pi)
    return max(left, 0.0) / now * updates


class RateControl(TrainingHook):
    """Adapts ``term.rate_lambda`` so that the file lands at ``aim_share`` x ``target_bits``
    (see the module docstring).

    ``side_bits`` are the bits the file holds besides the coded symbols (steps, header,
    container); ``term.last_bits`` (the latest step's estimated bits of the symbols) is
    read after every step, so the hook must follow ``term`` in the hook list.  One hook
    serves every phase of a recipe."""

    def __init__(self, term: RateTerm, target_bits: float, side_bits: float, *, gain: float = GAIN,
                 aim_share: float = AIM_SHARE):
        self.term, self.target_bits, self.side_bits = term, float(target_bits), float(side_bits)
        self.gain, self.aim_bits = float(gain), float(aim_share) * float(target_bits)
        self.start_lambda = float(term.rate_lambda)
        self.smoothed_bits: float | None = None  # the file's estimated bits, averaged over the steps
        self.errors: list[float] = []  # log(smoothed / aim) at the latest updates, for the trend
        self.steps_done = 0  # steps of the runs that finished (the trajectory's step count goes on across phases)
        self.trajectory: list[list[float]] = []  # [step, lambda after the update, smoothed bits] per update

    def after_step(self, step: Step) -> None:
        if self.term.last_bits is None:
            return
        run = step.run
        estimate = float(self.term.last_bits) + self.side_bits
        interval = update_interval(run.total_steps)
        if self.smoothed_bits is None:
            self.smoothed_bits = estimate
        else:  # an average over about one interval of steps
            self.smoothed_bits += 2.0 / (interval + 1) * (estimate - self.smoothed_bits)
        done = run.step + 1  # the loop counts this step once its hooks have run
        if done % interval == 0:
            progress = min(done / max(run.total_steps, 1), 1.0)
            self.update(self.steps_done + done, remaining_updates(progress, run.total_steps / interval))

    def update(self, global_step: int, remaining: float) -> None:
        """Move lambda towards the aim, the bits' trend extrapolated over ``remaining``
        updates' worth of learning rate."""
        error = math.log(max(self.smoothed_bits, 1.0) / self.aim_bits)
        self.errors = (self.errors + [error])[-(TREND_UPDATES + 1):]
        trend = (self.errors[-1] - self.errors[0]) / max(len(self.errors) - 1, 1)
        # only a fall is extrapolated: bits rising again after lambda fell have stopped
        # falling, and stay about where lambda holds them
        change = min(max(self.gain * (error + remaining * min(trend, 0.0)), -math.log(FALL)), math.log(RISE))
        adapted = self.term.rate_lambda * math.exp(change)
        self.term.rate_lambda = min(max(adapted, self.start_lambda / LAMBDA_RANGE), self.start_lambda * LAMBDA_RANGE)
        self.trajectory.append([int(global_step), self.term.rate_lambda, self.smoothed_bits])

    def finish(self, run: TrainingRun) -> None:
        self.steps_done += run.step

    def state_dict(self) -> dict:
        return {"rate_lambda": self.term.rate_lambda, "smoothed_bits": self.smoothed_bits,
                "errors": list(self.errors), "steps_done": self.steps_done,
                "trajectory": [list(point) for point in self.trajectory]}

    def load_state_dict(self, state: dict) -> None:
        self.term.rate_lambda = float(state["rate_lambda"])
        self.smoothed_bits = None if state.get("smoothed_bits") is None else float(state["smoothed_bits"])
        self.errors = [float(error) for error in state.get("errors", [])]
        self.steps_done = int(state.get("steps_done", 0))
        self.trajectory = [[int(point[0]), float(point[1]), float(point[2])] for point in state.get("trajectory", [])]

    # -- what the encode records ---------------------------------------------------------
    def estimated_bpp(self) -> float | None:
        return None if self.smoothed_bits is None else self.smoothed_bits / self.term.pixels

    def lambda_trajectory(self, points: int = TRAJECTORY_POINTS) -> list[float]:
        """The lambdas after ``points`` updates spread evenly over training (the last included)."""
        lambdas = [point[1] for point in self.trajectory]
        if len(lambdas) <= points:
            return lambdas
        return [lambdas[round(i * (len(lambdas) - 1) / (points - 1))] for i in range(points)]

    def record(self) -> dict:
        """For the header's encoder settings (the starting lambda is ``rate_lambda`` there)."""
        bpp = self.estimated_bpp()
        return {"lambda_final": float(f"{self.term.rate_lambda:.4g}"),
                "estimated_bpp": None if bpp is None else float(f"{bpp:.4g}"),
                "lambda_trajectory": [float(f"{value:.3g}") for value in self.lambda_trajectory()]}

    def stats(self) -> dict:
        """For the encode's stats: the record at full precision, and every update."""
        lambdas = [point[1] for point in self.trajectory] or [self.term.rate_lambda]
        return {"lambda_start": self.start_lambda, "lambda_final": self.term.rate_lambda,
                "estimated_bpp": self.estimated_bpp(), "target_bpp": self.target_bits / self.term.pixels,
                "aim_bpp": self.aim_bits / self.term.pixels, "lambda_min": min(lambdas), "lambda_max": max(lambdas),
                "updates": len(self.trajectory), "trajectory": [list(point) for point in self.trajectory]}


def rate_control(term: RateTerm, target_bits: float | None, step_values: int, tensors: int
                 ) -> RateControl | None:
    """The controller of an encode with a rate target (None without one).  The side
    information: ``step_values`` float32 steps, and the header and container, about
    HEADER_BYTES plus TENSOR_BYTES for each of ``tensors`` coded tensors."""
    if target_bits is None:
        return None
    return RateControl(term, target_bits,
                       STEP_VALUE_BITS * step_values + 8 * (HEADER_BYTES + TENSOR_BYTES * tensors))
