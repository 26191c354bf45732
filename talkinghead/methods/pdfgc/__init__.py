"""PD-FGC (Wang et al., CVPR 2023): progressive disentangled, fine-grained controllable talking heads
(lip from audio; head pose, eye gaze & blink and emotion each from its own driving video).

* `networks`: the assembled model (`PDFGC`, `PDFGCConfig.paper()` / `.tiny()`), official attribute
  names ``net_appearance`` / ``net_motion`` / ``net_audio`` / ``net_generator``, and the training
  discriminator (`build_discriminator`);
* `official`: import of the published ``appearance_model.pth``, ``motion_model.pth``,
  ``audio_model.pth``, ``generator_model.pth`` through an explicit key map.

Nothing is imported here, so importing the package costs nothing.
"""
