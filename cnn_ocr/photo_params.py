"""Params blocks of the photo work: the photo generator (`params.photos`) and the line recognizer
(`params.crnn`). The values live in `params.yaml`; these classes only say what is allowed."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from cnn_ocr.params_base import Strict

Rgb = tuple[int, int, int]


class PaperParams(Strict):
    """Paper colours, line colours and ruling spacings (in digit heights) the generator draws from."""

    colours: list[Rgb]
    line_colours: list[Rgb]
    line_spacing: list[float]  # ruled / squared pitch, in digit heights


class PhotoStyleParams(Strict):
    """How a photo is taken: frame size, light, pen, camera."""

    megapixels: tuple[float, float]
    digit_height: tuple[float, float]  # share of the frame's shorter side
    gradient: tuple[float, float]  # light fall-off across the frame (0 = even)
    shadow_probability: float = Field(ge=0, le=1)
    shadow_depth: tuple[float, float]  # share of the light a shadow takes away
    noise_sigma: tuple[float, float]
    blur_sigma: tuple[float, float]  # in pixels of a 1-MP frame
    rotation_deg: float = Field(ge=0, le=15)
    jpeg_quality: tuple[int, int]
    touching_gap: tuple[float, float]  # gap between touching digits, in digit widths (negative: overlap)
    spaced_gap: tuple[float, float]


class PhotoSetSizes(Strict):
    """How many photos of each kind an evaluation set holds."""

    digits: int = Field(ge=0)
    numbers: int = Field(ge=0)
    touching: int = Field(ge=0)
    pages: int = Field(ge=0)
    heldout: int = Field(ge=0)


class PhotosParams(Strict):
    """`params.photos`: the generated evaluation photos (MNIST test digits only)."""

    seed: int
    out_dir: Path
    sizes: PhotoSetSizes
    paper: PaperParams
    heldout_paper: PaperParams  # a paper colour and a ruling never used in tuning
    style: PhotoStyleParams


class CrnnParams(Strict):
    """`params.crnn`: the segmentation-free line recognizer and its CTC training on synthetic strings."""

    channels: list[int]
    hidden: int = Field(ge=8, le=1024)
    lr: float = Field(gt=0, le=1)
    batch_size: int = Field(ge=1, le=4096)
    steps: int = Field(ge=1)
    train_strings: int = Field(ge=1)  # synthetic strings drawn per epoch of the generator
    max_digits: int = Field(ge=1, le=32)
    seed: int
    threads: int = Field(ge=1, le=256)  # torch threads while training (1 is fastest on a shared CPU)
    out_dir: Path
    registered_model: str = Field(min_length=1)  # its own registered model in the MLflow registry
    parity_tolerance: float = Field(gt=0, le=1)  # ONNX vs PyTorch gap allowed for export and `production`
