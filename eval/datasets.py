"""The inputs of a report: UVG raw files, the bunny CPU tier, folders of clips or images, single files.

An :class:`InputSpec` says how to load one input (it is small and JSON-able, so jobs in
other processes or on other machines load the input themselves) and hashes the bytes it
is made from, so cached results are reused only for the same content and settings.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, replace
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import MediaError, NncError
from ..media import Video, VideoInfo, read_video
from ..media.reader import raw_frame_bytes
from ..units import parse_frame_size, plural

# Official UVG sequences (Mercat et al., MMSys 2020) with their frame counts.
UVG_FRAMES = {"beauty": 600, "bosphorus": 600, "honeybee": 600, "jockey": 600, "readysteadygo": 600,
              "shakendry": 300, "yachtride": 600}
UVG_NAME = re.compile(r"(?P<name>[A-Za-z]+)_(?P<width>\d+)x(?P<height>\d+)_(?P<fps>\d+)fps_420_8bit_YUV\.yuv",
                      re.IGNORECASE)
UVG_OFFICIAL_SIZE = (1920, 1080)
# UVG ships untagged raw YUV; the papers convert it as ffmpeg does by default.
UVG_COLOUR = ("bt601", "tv")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm")
CLIP_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".y4m", ".yuv", ".h264", ".264", ".h265", ".265", ".hevc")
RAW_NAME_SIZE = re.compile(r"(?:^|[_.-])(\d+)x(\d+)(?:[_.-]|$)")
DATASETS = ("uvg", "bunny-cpu")
# HNeRV's bunny protocol: all 132 frames, centre crop 1280x640; the CPU tier area-downscales it 2x.
BUNNY = Path(__file__).resolve().parents[1].parent / "shared" / "media" / "video" / "bunny_1280x720_25fps_132f.mp4"
BUNNY_CROP = (640, 1280)  # (height, width)


@dataclass(frozen=True)
class InputSpec:
    """How to load one input; the same spec always loads the same frames."""

    name: str  # unique within the report; used in file names
    kind: str  # "clip", "image", "raw", "bunny-cpu"
    path: str
    frames: int | None = None  # first N frames only
    crop: tuple[int, int] | None = None  # centre crop (height, width); --crop is WxH
    raw_size: tuple[int, int] | None = None  # (width, height) of a raw .yuv
    raw_pix_fmt: str | None = None
    raw_fps: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "InputSpec":
        data = dict(data)
        for key in ("crop", "raw_size"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        return cls(**data)

    def describe(self) -> str:
        parts = [self.path]
        if self.kind == "bunny-cpu":
            parts = ["bunny CPU tier (132 frames, centre crop 1280x640, area-downscaled to 640x320)"]
        if self.frames:
            parts.append(f"first {plural(self.frames, 'frame')}")
        if self.crop:
            parts.append(f"centre crop {self.crop[1]}x{self.crop[0]}")
        return ", ".join(parts)

    def check(self) -> None:
        """Fail now, before any job runs, when --frames or --crop cannot apply to this input."""
        if self.kind == "bunny-cpu":
            width, height, count = 640, 320, 132
        elif self.kind == "image":
            from PIL import Image, UnidentifiedImageError

            try:
                with Image.open(self.path) as image:
                    (width, height), count = image.size, 1
            except (UnidentifiedImageError, OSError) as error:
                raise MediaError(f"cannot read image {self.path}: {error}") from None
        elif self.kind == "raw":
            (width, height), count = self.raw_size, None  # the whole-frame check is the reader's
        else:
            from ..media import probe_video

            info = probe_video(self.path, max_frames=self.frames)
            width, height, count = info.width, info.height, info.num_frames
        if self.frames and count is not None and count < self.frames:
            raise MediaError(f"{self.name}: --frames {self.frames}, but it has only {count}")
        if self.crop and (self.crop[0] > height or self.crop[1] > width):
            raise MediaError(f"{self.name}: --crop {self.crop[1]}x{self.crop[0]} is larger than its "
                             f"{width}x{height} frames")

    def load(self) -> Video:
        if self.kind == "bunny-cpu":
            if not BUNNY.exists():
                raise MediaError(f"the bunny clip is not at {BUNNY} (it lives in ../shared/media/video)")
            video = load_bunny("cpu", max_frames=self.frames)
        elif self.kind == "image":
            video = read_image(Path(self.path))
        elif self.kind == "raw":
            matrix, value_range = UVG_COLOUR
            video = read_video(self.path, size=self.raw_size, pix_fmt=self.raw_pix_fmt,
                               fps=Fraction(self.raw_fps or 25), color_matrix=matrix, color_range=value_range,
                               max_frames=self.frames)
        else:
            video = read_video(self.path, max_frames=self.frames)
        if self.frames and video.info.num_frames < self.frames:
            raise MediaError(f"{self.name}: --frames {self.frames}, but it has only {video.info.num_frames}")
        if self.crop:
            video = centre_crop(video, *self.crop, name=self.name)
        return video

    def source_planes(self) -> list | None:
        """The clip's own decoded YUV planes (per frame [Y, U, V]), or None where the input only
        exists as RGB here (images, the bunny CPU tier, centre crops, RGB clips)."""
        if self.kind not in ("clip", "raw") or self.crop:
            return None
        from ..media.reader import read_planes

        try:
            if self.kind == "raw":
                matrix, value_range = UVG_COLOUR
                _, planes = read_planes(self.path, size=self.raw_size, pix_fmt=self.raw_pix_fmt,
                                        fps=Fraction(self.raw_fps or 25), color_matrix=matrix,
                                        color_range=value_range, max_frames=self.frames)
            else:
                _, planes = read_planes(self.path, max_frames=self.frames)
        except MediaError:  # an RGB clip: no planes of its own
            return None
        return planes

    def content_hash(self) -> str:
        """SHA-256 of the bytes this input is made from, plus how it is loaded."""
        digest = hashlib.sha256(repr(sorted(replace(self, path=Path(self.path).name).to_dict().items())).encode())
        path = Path(self.path)
        if self.kind == "bunny-cpu":
            path = BUNNY
        limit = None
        if self.kind == "raw" and self.frames:
            limit = self.frames * raw_frame_bytes(*self.raw_size, self.raw_pix_fmt)  # only what is read
        try:
            with open(path, "rb") as file:
                remaining = limit
                while chunk := file.read(1 << 20 if remaining is None else min(1 << 20, remaining)):
                    digest.update(chunk)
                    if remaining is not None:
                        remaining -= len(chunk)
                        if remaining <= 0:
                            break
        except OSError as error:
            raise MediaError(f"cannot read {path}: {error.strerror or error}") from None
        return digest.hexdigest()


def centre_crop(video: Video, height: int, width: int, *, name: str = "input") -> Video:
    """The centre ``height`` x ``width`` of every frame (HNeRV's 1280x640 / 1920x960 protocols, WxH)."""
    info = video.info
    if height > info.height or width > info.width:
        raise MediaError(f"{name}: --crop {width}x{height} is larger than its {info.width}x{info.height} frames")
    top, left = (info.height - height) // 2, (info.width - width) // 2
    frames = np.ascontiguousarray(video.frames[:, top : top + height, left : left + width])
    return Video(frames=frames, info=replace(info, width=width, height=height))


def centre_crop_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """The centre ``height`` x ``width`` of (T, H, W, C) frames (a view)."""
    top, left = (frames.shape[1] - height) // 2, (frames.shape[2] - width) // 2
    return frames[:, top : top + height, left : left + width]


def area_downscale_2x(frames: np.ndarray) -> np.ndarray:
    """Exact 2x area (box) downscale with round-half-up, in integers."""
    t, h, w, c = frames.shape
    blocks = frames.reshape(t, h // 2, 2, w // 2, 2, c).astype(np.uint32).sum(axis=(2, 4))
    return ((blocks + 2) // 4).astype(frames.dtype)


def load_bunny(tier: str, path: Path = BUNNY, max_frames: int | None = None) -> Video:
    """Bunny as HNeRV's protocol uses it: ``gpu`` the 1280x640 centre crop, ``cpu`` that crop downscaled 2x."""
    video = read_video(path, max_frames=max_frames)
    frames = centre_crop_frames(video.frames, *BUNNY_CROP)
    if tier == "cpu":
        frames = area_downscale_2x(frames)
    frames = np.ascontiguousarray(frames)
    info = replace(video.info, width=frames.shape[2], height=frames.shape[1], num_frames=frames.shape[0])
    return Video(frames=frames, info=info)


def read_image(path: Path) -> Video:
    """One 8-bit RGB image as a one-frame video (Pillow; grey and palette images become RGB)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if image.mode in ("I", "I;16", "I;16B", "F"):
                raise MediaError(f"{path}: {image.mode} (16-bit or float) images are not supported; use 8-bit")
            rgb = np.array(image.convert("RGB"))  # a writable copy (Pillow's buffer is read-only)
    except (UnidentifiedImageError, OSError) as error:
        raise MediaError(f"cannot read image {path}: {error}") from None
    height, width = rgb.shape[:2]
    info = VideoInfo(width=width, height=height, num_frames=1, fps=Fraction(1), pix_fmt="rgb24", bit_depth=8,
                     color_matrix="rgb", color_range="pc")
    return Video(frames=np.ascontiguousarray(rgb[None]), info=info)


def parse_crop(text: str | None) -> tuple[int, int] | None:
    """``--crop WxH`` (width first, as ``--video-size`` and ffmpeg; HNeRV's UVG crop is
    1920x960) -> (height, width), the order the crop is stored and applied in."""
    if text is None:
        return None
    width, height = parse_frame_size(text, "--crop", "1920x960")
    return height, width


def uvg_inputs(root: Path, frames: int | None, crop: tuple[int, int] | None) -> list[InputSpec]:
    """The UVG sequences under ``root``, recognised by their official file names.

    The size is read from the name (UVG also ships 3840x2160 files named the same way);
    where a sequence is there at several sizes, the official 1920x1080 one is used.
    Each file must hold exactly the official frame count (600, 300 for ShakeNDry).
    """
    if not root.is_dir():
        raise MediaError(f"--root {root}: not a folder")
    found: dict[str, list[tuple[Path, re.Match]]] = {}
    for path in sorted(root.iterdir()):
        match = UVG_NAME.fullmatch(path.name)
        if match and match["name"].lower() in UVG_FRAMES and path.is_file():
            found.setdefault(match["name"].lower(), []).append((path, match))
    specs = []
    for key, candidates in sorted(found.items()):
        official = [c for c in candidates if (int(c[1]["width"]), int(c[1]["height"])) == UVG_OFFICIAL_SIZE]
        path, match = (official or candidates)[0]
        width, height, fps = int(match["width"]), int(match["height"]), int(match["fps"])
        expected = UVG_FRAMES[key]
        frame_bytes = raw_frame_bytes(width, height, "yuv420p")
        size = path.stat().st_size
        if size != expected * frame_bytes:
            raise MediaError(f"{path.name} is {size} bytes; the official file is {expected} frames of {width}x{height} "
                             f"yuv420p ({expected * frame_bytes} bytes)")
        if frames is not None and frames > expected:
            raise MediaError(f"--frames {frames}: {path.name} has {expected} frames")
        specs.append(InputSpec(name=match["name"], kind="raw", path=str(path), frames=frames, crop=crop,
                               raw_size=(width, height), raw_pix_fmt="yuv420p", raw_fps=fps))
    if not specs:
        raise MediaError(f"no UVG files in {root}: expected official names like Beauty_1920x1080_120fps_420_8bit_YUV.yuv")
    return specs


def _file_input(path: Path, frames, crop) -> InputSpec:
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        if frames not in (None, 1):
            raise NncError(f"{path.name} is an image: --frames does not apply")
        return InputSpec(name=path.stem, kind="image", path=str(path), crop=crop)
    if suffix == ".yuv":
        match = UVG_NAME.fullmatch(path.name)
        size = RAW_NAME_SIZE.search(path.stem)
        if not size:
            raise MediaError(f"{path.name}: raw .yuv inputs need their size in the name (e.g. clip_352x288.yuv)")
        pix_fmt = "yuv420p10le" if re.search(r"10bit|10le", path.name, re.IGNORECASE) else "yuv420p"
        fps = int(match["fps"]) if match else 25
        return InputSpec(name=path.stem, kind="raw", path=str(path), frames=frames, crop=crop,
                         raw_size=(int(size[1]), int(size[2])), raw_pix_fmt=pix_fmt, raw_fps=fps)
    return InputSpec(name=path.stem, kind="clip", path=str(path), frames=frames, crop=crop)


def resolve_inputs(dataset: str, root: Path | None = None, frames: int | None = None,
                   crop: tuple[int, int] | None = None) -> list[InputSpec]:
    """``uvg`` (needs ``root``), ``bunny-cpu``, or a path: a clip, an image, or a folder of them."""
    if dataset == "uvg":
        if root is None:
            raise NncError("--dataset uvg needs --root DIR (the folder with the official .yuv files)")
        return uvg_inputs(Path(root), frames, crop)
    if dataset == "bunny-cpu":
        if frames is not None and frames > 132:
            raise NncError(f"--frames {frames}: the bunny clip has 132 frames")
        return [InputSpec(name="bunny_cpu", kind="bunny-cpu", path=str(BUNNY), frames=frames, crop=crop)]
    path = Path(dataset if root is None else Path(root) / dataset)
    if not path.exists():
        raise MediaError(f"--dataset {dataset}: not {', '.join(DATASETS)}, and no such file or folder")
    if path.is_file():
        return [_file_input(path, frames, crop)]
    members = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                     and p.suffix.lower() in IMAGE_SUFFIXES + CLIP_SUFFIXES)
    if not members:
        raise MediaError(f"{path} holds no clips or images ({', '.join(IMAGE_SUFFIXES + CLIP_SUFFIXES)})")
    specs = [_file_input(p, frames if p.suffix.lower() not in IMAGE_SUFFIXES else None, crop) for p in members]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):  # clip.mp4 and clip.y4m: keep the suffix to tell them apart
        specs = [replace(s, name=Path(s.path).name.replace(".", "_")) for s in specs]
    return specs
