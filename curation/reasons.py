"""The reject-reason strings shared by the CLI, the manifests and the generator's labels."""

PASS = "pass"

# file-level (decode) reasons
NOT_AN_IMAGE = "not_an_image"
UNREADABLE = "unreadable"
TRUNCATED = "truncated"
TOO_MANY_PIXELS = "too_many_pixels"
ANIMATED = "animated"  # more than one frame (APNG, animated WebP / GIF, multi-page TIFF)
CORRUPT = "corrupt"  # the container is complete but its data is damaged (e.g. garbage inside a JPEG scan)
UNSUPPORTED_FORMAT = "unsupported_format"  # an image, but not PNG/JPEG/TIFF/WebP (GIF, BMP, AVIF, HEIC, JPEG XL, ...)
NOT_A_REGULAR_FILE = "not_a_regular_file"  # a directory, FIFO, socket, device or broken symlink: never opened
SOURCE_CHANGED = "source_changed"  # the bytes read no longer hash to the id / sha256 recorded upstream

# raw pool
DUPLICATE = "duplicate"
TOO_FEW_PIXELS = "too_few_pixels"
MIN_SIDE_TOO_SHORT = "min_side_too_short"

# candidate pool: absolute filters, in verdict order
OVER_OR_UNDER_EXPOSED = "over_or_under_exposed"
BLURRED = "blurred"
FLAT = "flat"

# candidate pool: relative cuts
LOW_ENTROPY = "low_entropy"
LOW_AESTHETICS = "low_aesthetics"

# 100 MP corpus: final checks of the upscaled output, in verdict order
BELOW_100MP = "below_100mp"  # the output is still under the corpus' minimum pixel count
SEAM_DISCONTINUITY = "seam_discontinuity"  # the seam check flagged tile seams in the output
INCONSISTENT = "inconsistent_with_input"  # the output drifted from its input (consistency check)
JUDGE_FAILED = "judge_failed"  # a VLM judgement could not be made (a failed judgement is never a pass)
REGION_ARTIFACTS = "region_artifacts"  # the VLM judge flagged artifacts in the region patches
INSTANCE_ARTIFACTS = "instance_artifacts"  # the VLM judge flagged artifacts on an instance pair

# 100 MP corpus: the stage's own outcomes
UPSCALE_FAILED = "upscale_failed"  # upscaling the image (or checking its output) raised
DEFERRED = "deferred_by_profile_cap"  # not upscaled: over the profile's corpus.max_upscales_per_shard

# captions and the final corpus (paper 3.1.5, 3.1.4 instance check)
CAPTION_FAILED = "caption_failed"  # a captions step failed (tags, grounding, a model call, a caption)

FILE_REASONS = (NOT_AN_IMAGE, UNREADABLE, TRUNCATED, TOO_MANY_PIXELS, ANIMATED, CORRUPT, UNSUPPORTED_FORMAT,
                NOT_A_REGULAR_FILE, SOURCE_CHANGED)
SCREEN_REASONS = (TOO_FEW_PIXELS, MIN_SIDE_TOO_SHORT)
ABSOLUTE_REASONS = (OVER_OR_UNDER_EXPOSED, BLURRED, FLAT)
RELATIVE_REASONS = (LOW_ENTROPY, LOW_AESTHETICS)
CORPUS_REASONS = (BELOW_100MP, SEAM_DISCONTINUITY, INCONSISTENT, JUDGE_FAILED, REGION_ARTIFACTS, INSTANCE_ARTIFACTS,
                  UPSCALE_FAILED, DEFERRED)
CAPTION_REASONS = (CAPTION_FAILED, INSTANCE_ARTIFACTS, JUDGE_FAILED)
ALL = (DUPLICATE,) + FILE_REASONS + SCREEN_REASONS + ABSOLUTE_REASONS + RELATIVE_REASONS
