"""Ray, for the parallel backends (``--backend ray``: segments of one encode, jobs of a report).

One way to connect and one wording for what goes wrong, so that ``nnc encode`` and
``nnc report`` say the same thing about the same cluster."""

from __future__ import annotations

from ..errors import NncError


def first_line(error: BaseException) -> str:
    """An error as one line: its message's first line, or its type when it has none."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def connect_ray(address: str | None):
    """``(ray, started_here)``: Ray connected to ``address`` (None or ``local``: a new local
    instance; ``auto``: the running one; ``HOST:PORT``).  ``started_here`` is True when
    this call connected (the caller then shuts it down), False when the process was
    already connected.  Missing Ray or a cluster that cannot be reached is a one-line
    :class:`NncError`."""
    try:
        import ray
    except ImportError:
        raise NncError("--backend ray needs Ray: pip install 'nnc-toolkit[ray]'") from None
    if ray.is_initialized():
        return ray, False
    try:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise NncError(f"cannot connect to Ray at {address or 'a new local instance'}: {first_line(error)}") from None
    return ray, True
