"""Frames to a file: the encoder config and its levels, the PyAV encoder, muxing sound, and
joining chunks (pipeline step 4)."""
