"""Text layers: fonts and fallback, runs and line breaking, layout and fitting, drawing and
the layer raster (used by the compositor's text source)."""
