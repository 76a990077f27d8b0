"""Command-line options generated from the codecs' Options dataclasses.

Each codec writes its options once (default, help, range) in its ``Options`` dataclass;
this module turns the fields of all codecs into click options: one ``--flag`` per field
name, its help text and every codec's default, and refuses a flag the chosen codec does
not have (``nnc: --fso does not apply to --model hnerv``).
"""

from __future__ import annotations

from typing import Callable

import click

from ..errors import NncError

# Shared fields the command line sets through other options (or never).
NOT_FLAGS = {"show_progress", "checkpoint_path"}


def _format_value(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float) and value >= 1000:
        for suffix, scale in (("M", 1e6), ("k", 1e3)):
            if value >= scale:
                return f"{value / scale:.4g}{suffix}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def merged_help(codecs: list, name: str) -> str:
    """One help text for field ``name`` over ``codecs``: each distinct text with the codecs
    it belongs to (unless all have it) and their defaults."""
    texts: dict[str, dict[str | None, list[str]]] = {}
    for codec in codecs:
        item = codec.Options.fields().get(name)
        if item is not None:
            default = None if item.default is None else _format_value(item.default)
            texts.setdefault(item.metadata.get("help", ""), {}).setdefault(default, []).append(codec.name)
    having = sum(len(names) for defaults in texts.values() for names in defaults.values())
    parts = []
    for text, defaults in texts.items():
        owners = [n for names in defaults.values() for n in names]
        prefix = "" if len(texts) == 1 and having == len(codecs) else f"{', '.join(owners)}: "
        shown = {d: names for d, names in defaults.items() if d is not None}
        if len(shown) == 1 and len(defaults) == 1:
            text = text.rstrip(".") + f" (default {next(iter(shown))})."
        elif shown:
            text = text.rstrip(".") + " (default " + "; ".join(f"{', '.join(n)} {d}" for d, n in shown.items()) + ")."
        parts.append(prefix + text)
    return " ".join(parts)


def codec_options(codecs: list, exclude: tuple[str, ...] = ()) -> list[click.Option]:
    """click options for every Options field of ``codecs`` (shared fields last)."""
    from ..codec.base import CodecOptions, flag_of

    shared = list(CodecOptions.fields())
    names: list[str] = []
    for codec in sorted(codecs, key=lambda c: -len(c.Options.codec_fields())):  # the common fields first
        names += [n for n in codec.Options.codec_fields() if n not in names]
    names += [n for n in shared if any(n in c.Options.fields() for c in codecs)]
    params = []
    for name in names:
        if name in NOT_FLAGS or name in exclude:
            continue
        owners = [c for c in codecs if name in c.Options.fields()]
        item = owners[0].Options.fields()[name]
        value_type = owners[0].Options.field_types()[name]
        flag, help_text = flag_of(item), merged_help(codecs, name)
        if name == "size":  # --params 1.5M: parsed by the command (units.parse_count), errors in one line
            params.append(click.Option([flag, name], type=str, default=None, metavar="N",
                                       help=f"Model size in parameters: 1.5M, 375k, 200000. {help_text}"))
            continue
        choices = sorted({v for c in owners for v in (c.Options.fields()[name].metadata.get("choices") or ())})
        if value_type is bool and item.default is None:  # on, off, or the codec decides
            params.append(click.Option([f"{flag}/--no-{flag[2:]}", name], default=None, help=help_text))
        elif value_type is bool:
            params.append(click.Option([flag, name], is_flag=True, default=None, help=help_text))
        elif name in ("time_budget", "bitrate"):  # 20m, 800k: parsed by the options dataclass, errors in one line
            params.append(click.Option([flag, name], type=str, default=None, help=help_text,
                                       metavar=item.metadata.get("metavar")))
        else:
            kind = click.Choice(choices) if choices else {int: int, float: float}.get(value_type, str)
            params.append(click.Option([flag, name], type=kind, default=None, help=help_text,
                                       metavar=item.metadata.get("metavar")))
    return params


def given_values(codecs: list, values: dict) -> dict:
    """The codec option values the user gave (None, and False of an on-only flag, mean "not given")."""
    fields = {n: item for c in codecs for n, item in c.Options.fields().items()}
    return {k: v for k, v in values.items()
            if k in fields and v is not None and not (v is False and fields[k].default is False)}


def build_options(codec, values: dict, **extra):
    """``codec``'s options from the given values; a flag it does not have is a one-line error."""
    from ..codec.base import flag_of

    fields = codec.Options.fields()
    for name in values:
        if name not in fields:
            flag = next((flag_of(c.Options.fields()[name]) for c in all_codecs() if name in c.Options.fields()),
                        "--" + name.replace("_", "-"))
            raise NncError(f"{flag} does not apply to --model {codec.name}")
    return codec.make_options(**values, **extra)


def all_codecs() -> list:
    from ..codec.registry import codec_classes

    return codec_classes()


class CodecOptionsCommand(click.Command):
    """A command whose codec options are generated on first use, so that ``nnc --help``
    and the other commands do not import every codec."""

    def __init__(self, *args, codec_params: Callable[[], list[click.Option]], **kwargs):
        super().__init__(*args, **kwargs)
        self._codec_params = codec_params
        self._generated = False

    def get_params(self, ctx):
        if not self._generated:
            self._generated = True
            position = next((i for i, p in enumerate(self.params) if p.name == "quiet"), len(self.params))
            self.params[position:position] = self._codec_params()
        return super().get_params(ctx)
