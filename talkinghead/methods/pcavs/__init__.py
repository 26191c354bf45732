"""PC-AVS (Zhou et al., CVPR 2021): pose-controllable audio-driven talking heads.

* `networks`: the assembled model (`PCAVS`, `PCAVSConfig.paper()` / `.tiny()`), official submodule
  names ``netV`` / ``netE`` / ``netA_sync`` / ``netG``;
* `module`: the `StagedModule` subclass (`PCAVSModule`, stages ``identity`` -> ``sync`` -> ``full``);
* `config`: the config schema (experiments/pcavs/*.yaml); `method`: the registry declaration
  (stages, data, module, generator, importer, bench rows), trained by ``talkinghead train --method pcavs``;
* `generate`: `PCAVSGenerator` and `generate(checkpoint, reference, audio, out, ...)` (a
  `talkinghead.generation.Generator`: controls ``--pose-source`` /
  ``--fixed-pose`` / ``--frontal``, features -> frames); `bench`: the factories of its bench rows;
* `official`: import of the published ``latest_net_{G,V,E,A_sync}.pth``;
* `augment`: `PCAVSAugment`, the target-frame augmentation of E_n's input (the data module's
  ``augment=``).

Pose transfer and the fixed-pose row are scored by the benchmark harness
(``make bench DATASET=synth-pose METHODS="pcavs pcavs_fixed_pose"``).

Nothing is imported here, so importing the package costs nothing.
"""
