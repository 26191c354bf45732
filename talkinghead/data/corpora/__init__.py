"""Corpus readers: importing this package registers 'vox2', 'lrw' and 'mead'.

`read_corpus(name, root)` indexes a corpus into a sorted list of `Clip` records.
"""
from talkinghead.data.corpora import lrw, mead, vox2  # noqa: F401  (register readers)
from talkinghead.data.corpora.base import FPS, READERS, SAMPLE_RATE, Clip, read_corpus, truth_path

__all__ = ["Clip", "FPS", "READERS", "SAMPLE_RATE", "read_corpus", "truth_path",
           "lrw", "mead", "vox2"]
