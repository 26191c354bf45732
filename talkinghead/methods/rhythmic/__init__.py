"""Rhythmic Head (Chen et al., ECCV 2020): audio-driven talking heads with learnt rhythmic head motion."""
