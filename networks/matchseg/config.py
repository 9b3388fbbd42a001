"""MatchSeg's configuration: every architecture number is a field of :class:`MatchSegConfig`.

MatchSeg (Huo et al., arXiv 2403.15901) is a UniverSeg-style CrossBlock U-Net with a Joint Attention module between
the query and its support set. The paper gives neither widths nor the attention's placement; the defaults follow
``shared/matchseg_spec.md`` (sections 3, 4 and 9) and are documented in docs/matchseg.md.
Named presets live in ``PRESETS``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..registry import cli_option as _option

INPUT_NORMS = ("dataset", "unit")  # MatchSegConfig.input_norm


@dataclass(frozen=True)
class MatchSegConfig:
    """Fields saved in checkpoints (``asdict``) and rebuilt from them; those with ``help`` metadata are options of
    the scripts.

    ``widths``: one CrossBlock per entry in the encoder (the resolution halves after every block but the last) and
    the same widths reversed, without the deepest, in the decoder (UniverSeg's layout). ``num_classes``: classes
    including background; the network predicts one logit per foreground class (UniverSeg: one) and returns logits
    ``(0, z_1, ..., z_{C-1})``, so that softmax and argmax over classes give sigmoid(z) and ``z > 0`` in the binary
    case. Joint Attention follows every block (encoder and decoder) whose feature map at ``img_size`` has at most
    ``ja_max_hw`` pixels.
    """

    num_classes: int = 2
    in_chans: int = 3
    img_size: int = field(default=128, metadata=_option(
        "input size of the network (a multiple of 2 ** (number of widths - 1); the Joint Attention placement is "
        "decided at this size)"))
    widths: tuple[int, ...] = field(default=(64, 64, 64, 64), metadata=_option(
        "channels of the encoder's CrossBlocks, one per level (the decoder uses them reversed, without the deepest)"))
    joint_attention: int = field(default=1, metadata=_option(
        "1: Joint Attention between the query and its supports (MatchSeg); 0: the plain UniverSeg backbone",
        choices=(0, 1), minimum=0))
    ja_max_hw: int = field(default=1024, metadata=_option(
        "Joint Attention after every block whose feature map at img_size has at most this many pixels (H*W)",
        minimum=0))
    input_norm: str = field(default="dataset", metadata=_option(
        "intensities the network takes: dataset = as the data set normalises them (RGB sets: ImageNet mean/std); "
        "unit = [0, 1] per channel, UniverSeg's convention (its released weights were trained on it)",
        choices=INPUT_NORMS))
    ja_reduction: int = 8  # query/key dimension of Joint Attention: max(C // ja_reduction, ja_min_dim)
    ja_min_dim: int = 8
    negative_slope: float = 0.01  # LeakyReLU of every ConvOp (UniverSeg: torch's default)

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (background included), got {self.num_classes}")
        if self.in_chans < 1:
            raise ValueError(f"in_chans must be >= 1, got {self.in_chans}")
        if not self.widths or any(not isinstance(w, int) or w <= 0 for w in self.widths):
            raise ValueError(f"widths must be a non-empty tuple of positive ints, got {self.widths!r}")
        if self.img_size <= 0 or self.img_size % self.size_divisor:
            raise ValueError(f"img_size must be a positive multiple of {self.size_divisor} "
                             f"(2 ** (len(widths) - 1)), got {self.img_size}")
        if self.joint_attention not in (0, 1):
            raise ValueError(f"joint_attention must be 0 or 1, got {self.joint_attention!r}")
        if self.input_norm not in INPUT_NORMS:
            raise ValueError(f"input_norm must be one of {', '.join(INPUT_NORMS)}, got {self.input_norm!r}")
        if self.ja_max_hw < 0 or self.ja_reduction < 1 or self.ja_min_dim < 1:
            raise ValueError("ja_max_hw must be >= 0, ja_reduction and ja_min_dim >= 1")

    @property
    def size_divisor(self) -> int:
        """Input height and width must be multiples of this (one max-pooling per encoder block but the last)."""
        return 2 ** (len(self.widths) - 1)

    @property
    def support_channels(self) -> int:
        """Channels of a support entry: its image and one mask channel per foreground class."""
        return self.in_chans + self.num_classes - 1

    @property
    def decoder_widths(self) -> tuple[int, ...]:
        return tuple(reversed(self.widths[:-1]))

    def ja_encoder_levels(self) -> tuple[bool, ...]:
        """Per encoder block: whether Joint Attention follows it (block i works at img_size / 2**i)."""
        return tuple(self._ja_at(self.img_size >> level) for level in range(len(self.widths)))

    def ja_decoder_levels(self) -> tuple[bool, ...]:
        """Per decoder block: whether Joint Attention follows it (block j works at img_size / 2**(depth-2-j))."""
        depth = len(self.widths)
        return tuple(self._ja_at(self.img_size >> (depth - 2 - j)) for j in range(depth - 1))

    def _ja_at(self, side: int) -> bool:
        return bool(self.joint_attention) and side * side <= self.ja_max_hw


# Named presets. `matchseg`: the spec's recommended configuration (RGB, widths 64, Joint Attention at <= 32x32 of a
# 128 px input); `matchseg_wide`: widths 160 to approach the paper's 7.79 M parameters; `universeg`: UniverSeg's
# released model (grey, widths 64, no Joint Attention: 1,182,785 parameters).
PRESETS: dict[str, dict] = {
    "matchseg": dict(in_chans=3, widths=(64, 64, 64, 64), joint_attention=1),
    "matchseg_wide": dict(in_chans=3, widths=(160, 160, 160, 160), joint_attention=1),
    "universeg": dict(in_chans=1, widths=(64, 64, 64, 64), joint_attention=0),
}
