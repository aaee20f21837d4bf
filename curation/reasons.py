"""The reject-reason strings shared by the CLI, the manifests and the generator's labels."""

PASS = "pass"

# file-level (decode) reasons
NOT_AN_IMAGE = "not_an_image"
UNREADABLE = "unreadable"
TRUNCATED = "truncated"
TOO_MANY_PIXELS = "too_many_pixels"
ANIMATED = "animated"  # more than one frame (APNG, animated WebP, multi-page TIFF)

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

FILE_REASONS = (NOT_AN_IMAGE, UNREADABLE, TRUNCATED, TOO_MANY_PIXELS, ANIMATED)
SCREEN_REASONS = (TOO_FEW_PIXELS, MIN_SIDE_TOO_SHORT)
ABSOLUTE_REASONS = (OVER_OR_UNDER_EXPOSED, BLURRED, FLAT)
RELATIVE_REASONS = (LOW_ENTROPY, LOW_AESTHETICS)
ALL = (DUPLICATE,) + FILE_REASONS + SCREEN_REASONS + ABSOLUTE_REASONS + RELATIVE_REASONS
