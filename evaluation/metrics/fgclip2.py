"""FG-CLIP2 score on the long caption (PixVerve ``compute_fgclip2_score``)."""

from __future__ import annotations

from evaluation.metrics.base import PER_IMAGE, Metric, hf_model_cached, missing_or_not_wired, register

FGCLIP2_MODEL = "qihoo360/fg-clip2-base"
TEXT_MAX_LENGTH = 196


def max_num_patches(width: int, height: int) -> int:
    """The image patch budget the reference passes to the FG-CLIP2 processor.

    ``n = (width // 16) * (height // 16)``; 1024 if ``n > 784``, 784 if ``n > 576``, 576 if
    ``n > 256``, 256 if ``n > 128``, else 128 (``determine_max_value``). Every UHR image gets
    1024.
    """
    n = (int(width) // 16) * (int(height) // 16)
    for threshold, budget in ((784, 1024), (576, 784), (256, 576), (128, 256)):
        if n > threshold:
            return budget
    return 128


@register
class FgClip2Metric(Metric):
    """FG-CLIP2 score of each generated image with its *long* caption.

    Protocol (reference: PixVerve-95K ``eval/metrics.py`` @3f9e7bd, ``compute_fgclip2_score``):

    * model ``qihoo360/fg-clip2-base`` (``AutoModelForCausalLM``, ``trust_remote_code``), its
      tokenizer and image processor;
    * image ``convert("RGB")`` through the processor with ``max_num_patches =``
      :func:`max_num_patches` of the image size;
    * text ``caption.lower()``, ``padding="max_length"``, ``max_length=196``, truncation;
      ``get_text_features(..., walk_type="long")`` (the long-caption mode);
    * both features L2-normalised; score = ``max(cos, 0) * 100``; set score = mean over images.

    Needs the FG-CLIP2 weights (remote code included) and the captions.
    """

    name = "fgclip2"
    kind = PER_IMAGE
    requires = ("weights:fg-clip2-base", "captions")
    protocol_version = "pixverve-3f9e7bd/fgclip2-base-long196/1"
    higher_is_better = True

    def __init__(self, device: str = "cpu") -> None:
        self.device = device

    def availability(self) -> tuple[bool, str | None]:
        missing = []
        if hf_model_cached(FGCLIP2_MODEL) is None:
            missing.append(f"{FGCLIP2_MODEL} weights not in the Hugging Face cache")
        return False, missing_or_not_wired(missing)
