"""One frame from many layers: the timeline and easing, layer sources, blending, the
compositor, and the audio mix (pipeline step 3)."""
