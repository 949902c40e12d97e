"""Queue and actor names, and the modules that declare the actors: the one place they are
spelled.

Messages name their actor by string, so whoever enqueues (the API, the store, recovery)
imports the name from here without importing, and so declaring, the actors themselves.
"""

from __future__ import annotations

# Library uploads (templates, audio, assets) and renders run in separate queues, so a
# worker can serve one kind only (``velocity worker --queues``).
LIBRARY_QUEUE = "library"
RENDERS_QUEUE = "renders"
ALL_QUEUES = (LIBRARY_QUEUE, RENDERS_QUEUE)

# Queue ``library``.
TEMPLATE_ACTOR = "process_template"
AUDIO_ACTOR = "process_audio"
ASSET_ACTOR = "process_asset"

# Queue ``renders``.
RENDER_ACTOR = "render"
CHUNK_ACTOR = "render_chunk"
FINALIZE_ACTOR = "finalize_render"
WEBHOOK_ACTOR = "deliver_render_webhook"

# Imported by ``jobs.broker.setup_broker`` once the broker exists (declaring an actor binds
# it to the global broker).
ACTOR_MODULES = ("jobs.library.actors", "jobs.renders.actors")

# Imported once by the render child processes' forkserver, so each child starts with the
# renderer and the modules of the work functions an attempt sends it (none declares actors).
CHILD_PRELOAD = ("jobs.renders.single", "jobs.renders.chunked", "renderer.render", "av")

__all__ = [
    "ACTOR_MODULES",
    "ALL_QUEUES",
    "ASSET_ACTOR",
    "AUDIO_ACTOR",
    "CHILD_PRELOAD",
    "CHUNK_ACTOR",
    "FINALIZE_ACTOR",
    "LIBRARY_QUEUE",
    "RENDERS_QUEUE",
    "RENDER_ACTOR",
    "TEMPLATE_ACTOR",
    "WEBHOOK_ACTOR",
]
