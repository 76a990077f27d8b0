"""``--preset fast|medium|slow``: model size target, epochs and recipe items in one word.

A preset fills in the options the user did not give (:meth:`nnc.codec.base.Codec.make_options`
applies it, so an explicit ``--epochs`` or ``--finetune-epochs`` wins, also when it equals
the default).  Its model size target is a bpp the default size rule aims at (the same rule
as without a preset, :func:`nnc.codec.planning.default_model_size`: parameters x 8 bits,
within 20k..1.5M, the next solvable size up for tiny clips); an explicit ``--params``,
``--bpp`` or ``--bitrate`` replaces it.  Without a preset nothing changes: the default
size aims at 0.1 bpp and each codec keeps its published recipe.

Presets trade encode time for quality at about the same rate: ``fast`` also halves the
size target, since the time per epoch follows the model size.
"""

from __future__ import annotations

PRESET_NAMES = ("fast", "medium", "slow")

# Model size target of each preset, in bpp at 8 bits a parameter (the default's 0.1 without one).
SIZE_TARGET_BPP = {"fast": 0.05, "medium": 0.1, "slow": 0.1}

# Option values each preset sets where the codec has the option and the user did not give it.
# NeRV's pruning fine-tune has a fixed default (the authors' 100 epochs), so the presets scale
# it with the training; HiNeRV's fine-tune and QAT default to shares of --epochs already.
PRESET_OPTIONS = {
    "fast": {"epochs": 50, "finetune_epochs": 10},
    "medium": {"epochs": 150, "finetune_epochs": 50},
    "slow": {"epochs": 600, "finetune_epochs": 200},
}
# Codecs whose fine-tune epochs default to a share of --epochs: the preset leaves them alone.
SCALED_FINETUNE = {"hinerv"}

PRESET_HELP = ("Speed/quality preset, filling in what is not given explicitly: fast = model for about 0.05 bpp, "
               "50 epochs (NeRV/NeRV++ fine-tune 10); medium = about 0.1 bpp, 150 epochs (fine-tune 50); "
               "slow = about 0.1 bpp, 600 epochs (fine-tune 200). HiNeRV's fine-tune and QAT stay 20% and 10% "
               "of the epochs. Default: no preset (the codec's published recipe).")


def preset_values(codec_name: str, preset: str, fields) -> dict:
    """The option values ``preset`` sets for codec ``codec_name`` (only fields it has)."""
    values = {name: value for name, value in PRESET_OPTIONS[preset].items() if name in fields}
    if codec_name in SCALED_FINETUNE:
        values.pop("finetune_epochs", None)
    return values


def apply_preset(codec_name: str, fields, values: dict) -> dict:
    """``values`` (the options given, None meaning not given) with the preset's values filled in."""
    preset = values.get("preset")
    if preset is None or preset not in PRESET_OPTIONS:  # an unknown name is left to validate()
        return values
    filled = dict(values)
    for name, value in preset_values(codec_name, preset, fields).items():
        if filled.get(name) is None:
            filled[name] = value
    return filled


def size_target_bpp(preset: str | None) -> float | None:
    """The bpp a preset's default model size aims at (None: no preset)."""
    return None if preset is None else SIZE_TARGET_BPP[preset]
