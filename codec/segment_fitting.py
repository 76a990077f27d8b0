"""Fitting the segments of a segmented encode (``--segment-frames``), in parallel where asked.

Each segment is the codec's own ``compress`` on the segment's frames, with the encode's
options and seed, so the segments are independent: they are fitted one after another
(``--jobs 1``, in this process), in a pool of ``--jobs`` spawned processes with
``cpu_count // jobs`` torch threads each, or as Ray tasks (``--backend ray``), at most
``--jobs`` at once.  A segment's result depends only on its frames, its options and the
threads it trains with: the same threads give the same bytes whichever way it ran.
``--time-budget`` is the whole encode's wall clock: with J of S segments fitted at once,
each gets budget x min(J, S) / S.

Checkpoints, with the output's (``OUT.nnc.ckpt``): a segment being trained checkpoints
to ``OUT.nnc.ckpt.seg{i}`` (the codec's own checkpoint; not on Ray, whose tasks may run
on other machines), and a fitted segment is kept as ``OUT.nnc.ckpt.seg{i}.nnc``, a .nnc
file of that segment alone whose header holds a fingerprint of its frames and settings.
``--resume`` takes fitted segments as they are and resumes the others from their
checkpoints.  All of them are removed once the file is written.
"""

from __future__ import annotations

import math
import os
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Iterator

import torch

from ..bitstream import Bitstream, read_bitstream_file, write_bitstream_file
from ..bitstream.container import MAX_GROUPS
from ..errors import InvalidBitstreamError, NncError
from ..media import Video
from ..units import plural
from .base import Codec, CodecOptions, CompressedVideo
from .checkpoint import fingerprint, remove_checkpoint_files
from .planning import PlanReport
from .ray_backend import connect_ray
from .registry import get_codec
from .segments import spans

FITTED_KEY = "fitted_segment"  # a fitted segment file's record in its header


@dataclass
class SegmentTask:
    """One segment to fit: what a worker process or a Ray task receives."""

    index: int
    first_frame: int  # in the whole video
    model: str
    video: Video  # the segment's frames
    options: CodecOptions
    threads: int | None = None  # torch threads of a worker (None: this process's own)


def fit_segment(task: SegmentTask) -> CompressedVideo:
    if task.threads is not None:
        torch.set_num_threads(task.threads)
    return get_codec(task.model)().compress(task.video, task.options)


def segment_video(video: Video, span: range) -> Video:
    return Video(frames=video.frames[span.start : span.stop], info=replace(video.info, num_frames=len(span)))


def segment_options(options: CodecOptions, index: int, count: int, fitted_at_once: int) -> CodecOptions:
    """Segment ``index``'s options: the encode's, with its share of the time budget and
    its own checkpoint."""
    budget = options.time_budget
    checkpoint = None if options.checkpoint_path is None else f"{options.checkpoint_path}.seg{index}"
    return replace(options, segment_frames=None, jobs=1, backend="local", address=None,
                   time_budget=None if budget is None else budget * fitted_at_once / count,
                   checkpoint_path=checkpoint, resume=options.resume and checkpoint is not None
                   and Path(checkpoint).exists())


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def plan_segments(video: Video, options: CodecOptions, model: str) -> list[SegmentTask]:
    """Every segment's task (threads set for a pool of ``--jobs`` workers)."""
    parts = spans(video.info.num_frames, options.segment_frames)
    if len(parts) > MAX_GROUPS:
        least = -(-video.info.num_frames // MAX_GROUPS)
        raise NncError(f"--segment-frames {options.segment_frames} cuts {plural(video.info.num_frames, 'frame')} into "
                       f"{len(parts)} segments; a file holds at most {MAX_GROUPS} tensor groups: use "
                       f"--segment-frames {least} or more")
    at_once = min(options.jobs, len(parts))
    in_this_process = options.jobs == 1 and options.backend == "local"
    threads = None if in_this_process else max(1, available_cpus() // at_once)
    return [SegmentTask(index, span.start, model, segment_video(video, span),
                        segment_options(options, index, len(parts), at_once), threads)
            for index, span in enumerate(parts)]


def fit_segments(codec: Codec, video: Video, options: CodecOptions) -> list[tuple[range, CompressedVideo]]:
    """Each segment's frames and the codec's result on them, in order."""
    tasks = plan_segments(video, options, codec.name)
    say = _say if options.show_progress else (lambda text: None)
    fitted = {}
    for task in tasks if options.resume else ():
        if (kept := _load_fitted(task, options)) is not None:
            fitted[task.index] = kept
    if options.resume and not fitted and not any(task.options.resume for task in tasks):
        raise NncError(f"--resume: no fitted segment nor checkpoint at {options.checkpoint_path}.seg* "
                       "(start without --resume)")
    if fitted:
        say(f"nnc: --resume: {plural(len(fitted), 'segment')} of {len(tasks)} already fitted")
    # The shortest segment (the last) first: a refusal that only it meets (the file-size
    # check of a tiny segment) then comes before the others have trained.
    queue = sorted((task for task in tasks if task.index not in fitted),
                   key=lambda task: (task.video.info.num_frames, task.index))
    for task, result in _run(queue, options, say):
        _keep_fitted(task, options, result)
        fitted[task.index] = result
        say(f"nnc: segment {task.index} ({_frames_text(task)}) fitted: {len(fitted)} of {len(tasks)} done")
    return [(range(task.first_frame, task.first_frame + task.video.info.num_frames), fitted[task.index])
            for task in tasks]


def _say(text: str) -> None:
    from tqdm.auto import tqdm  # a line that does not break the codec's progress bar

    tqdm.write(text, file=sys.stderr)


class SegmentsPlanReport(PlanReport):
    """A segmented encode's dry run: the first segment's plan, said to be one of several."""

    def summary(self) -> str:
        plan = self.plan
        return super().summary().replace(
            "dry run (nothing written): ", f"dry run (nothing written): {plural(plan['segments'], 'segment')}, each "
            f"about as costly as the first (planned on its {plural(plan['segment_frames'], 'frame')}): ", 1)


def _frames_text(task: SegmentTask) -> str:
    last = task.first_frame + task.video.info.num_frames - 1
    return f"frame {last}" if last == task.first_frame else f"frames {task.first_frame}-{last}"


def _run(queue: list[SegmentTask], options: CodecOptions, say: Callable[[str], None]
         ) -> Iterator[tuple[SegmentTask, CompressedVideo]]:
    if not queue:  # every segment was fitted before --resume
        return iter(())
    if options.backend == "ray":
        return _run_on_ray(queue, options.jobs, options.address)
    if options.jobs == 1:
        return _run_here(queue, say)
    # A pool even for one segment left (a resumed encode): each segment trains with the
    # threads it was planned with, and so gives the bytes it would have given.
    return _run_in_processes(queue, min(options.jobs, len(queue)))


def _run_here(queue: list[SegmentTask], say: Callable[[str], None]) -> Iterator[tuple[SegmentTask, CompressedVideo]]:
    for task in queue:
        say(f"nnc: fitting segment {task.index} ({_frames_text(task)})")
        yield task, fit_segment(task)


def _run_in_processes(queue: list[SegmentTask], workers: int) -> Iterator[tuple[SegmentTask, CompressedVideo]]:
    # Spawned processes (no fork: torch's threads do not survive it); their progress bars
    # would interleave, so each finished segment is one line instead.
    queue = [replace(task, options=replace(task.options, show_progress=False)) for task in queue]
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(fit_segment, task): task for task in queue}
        pending, failure = set(futures), None
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    if future.cancelled():
                        continue
                    if future.exception() is None:
                        yield futures[future], future.result()
                    elif failure is None:  # no new segment starts; the running ones finish and are kept
                        failure = _segment_error(futures[future], future.exception())
                        for other in pending:
                            other.cancel()
        except BaseException:  # Ctrl-C: the workers got it too, and checkpoint
            for future in pending:
                future.cancel()
            raise
    if failure is not None:
        raise failure


class WorkerDied(Exception):
    """A Ray task that ended without an error of its own (its worker process was killed)."""


def _segment_error(task: SegmentTask, error: BaseException) -> BaseException:
    """A segment's failure as the user should see it: the codec's own error (a one-line
    NncError, or a bug's), or one line when the worker process died."""
    if isinstance(error, (BrokenProcessPool, WorkerDied)):
        return NncError(f"segment {task.index}: its worker process died (out of memory, or killed)")
    return error


def _run_on_ray(queue: list[SegmentTask], at_once: int, address: str | None
                ) -> Iterator[tuple[SegmentTask, CompressedVideo]]:
    ray, started_here = connect_ray(address)
    # A task may land on any machine: no checkpoints (the driver keeps fitted segments),
    # and no more threads than the largest machine has CPUs (or it would never start).
    largest = max((node["Resources"].get("CPU", 1) for node in ray.nodes() if node.get("Alive")), default=1)
    remote = ray.remote(fit_segment)
    queue = [replace(task, threads=max(1, min(task.threads or 1, int(largest))),
                     options=replace(task.options, show_progress=False, checkpoint_path=None, resume=False))
             for task in queue]
    running, failure = {}, None
    try:
        while running or (queue and failure is None):
            while queue and failure is None and len(running) < at_once:
                task = queue.pop(0)
                running[remote.options(num_cpus=task.threads, max_retries=0).remote(task)] = task
            [done], _ = ray.wait(list(running), num_returns=1)
            task = running.pop(done)
            try:
                result = ray.get(done)
            except Exception as error:  # noqa: BLE001 -- Ray wraps the task's own error; as in the pool,
                # no new segment starts and the running ones finish and are kept
                failure = failure or _segment_error(task, getattr(error, "cause", None) or WorkerDied())
                continue
            yield task, result
    finally:
        for reference in running:  # only after an interrupt
            ray.cancel(reference, force=True)
        if started_here:
            ray.shutdown()
    if failure is not None:
        raise failure


# -- fitted segments kept for --resume ------------------------------------------------


def fitted_path(checkpoint_path: str | Path, index: int) -> Path:
    return Path(f"{checkpoint_path}.seg{index}.nnc")


def _fingerprint(task: SegmentTask) -> str:
    settings = dict(task.options.settings(), seed=task.options.seed, codec=task.model, segment=task.index)
    return fingerprint(task.video.frames, settings)


def _keep_fitted(task: SegmentTask, options: CodecOptions, result: CompressedVideo) -> None:
    """Save a fitted segment beside the checkpoints (our .nnc format: no pickle)."""
    if options.checkpoint_path is None:
        return
    stats = {name: value for name, value in result.stats.items() if isinstance(value, (int, float))
             and not isinstance(value, bool) and math.isfinite(value)}
    header = {"media": task.video.info.to_dict(), "model": result.model_header,
              FITTED_KEY: {"fingerprint": _fingerprint(task), "settings": result.settings, "stats": stats}}
    write_bitstream_file(fitted_path(options.checkpoint_path, task.index), Bitstream(task.model, header, result.groups))


def _load_fitted(task: SegmentTask, options: CodecOptions) -> CompressedVideo | None:
    """A fitted segment kept by an interrupted encode of the same frames and settings, or None."""
    if options.checkpoint_path is None:
        return None
    path = fitted_path(options.checkpoint_path, task.index)
    if not path.exists():
        return None
    advice = "delete it and encode again without --resume"
    try:
        bitstream = read_bitstream_file(path)
        record = bitstream.header[FITTED_KEY]
        made_for, settings, stats = record["fingerprint"], record["settings"], record["stats"]
        model_header = bitstream.header["model"]
    except (InvalidBitstreamError, KeyError, TypeError):
        raise NncError(f"--resume: {path} is not a fitted segment of this nnc: {advice}") from None
    if made_for != _fingerprint(task) or bitstream.codec != task.model:
        raise NncError(f"--resume: {path} was fitted for another input or other settings: {advice}")
    return CompressedVideo(model_header=model_header, groups=bitstream.groups, settings=settings, stats=stats)


def remove_segment_files(checkpoint_path: str | Path, count: int) -> None:
    """Every segment's checkpoint and kept result (the encode is complete)."""
    for index in range(count):
        remove_checkpoint_files(f"{checkpoint_path}.seg{index}")
        remove_checkpoint_files(fitted_path(checkpoint_path, index))
