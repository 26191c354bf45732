"""Data layer: audio/video I/O, faces, corpus readers, preprocessing, clip store, data module."""
