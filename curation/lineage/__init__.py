"""Per-image lineage: one link provider per stage, found by discovery.

``lineage(ctx, image_id)`` walks an image's family (its ancestors and descendants through
``parent_id``) and asks every provider for its links. A provider is a small class in
``curation/lineage/providers/`` registered with :func:`register_link_provider`; a new stage
adds its file there and nothing else changes (the captions and checkpoint stages will).

Batch first: providers answer for a set of ids at once (``uhr audit`` asks for a whole release).
"""

from curation.lineage.core import (  # noqa: F401
    LineageContext,
    Link,
    LinkProvider,
    family,
    lineage,
    lineage_batch,
    link_providers,
    register_link_provider,
    resolve_image_id,
)
from curation.lineage.render import image_lineage, lineage_text  # noqa: F401
