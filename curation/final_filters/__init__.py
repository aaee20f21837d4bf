"""Final filtering of the 100 MP corpus (paper 3.1.4), one module per check. No Dagster here.

* :mod:`.seams` - seam continuity: gradient ratio across every seam of the 384-px tile
  stride, flag if any > r_t = 2.5;
* :mod:`.consistency` - post-SR consistency: SR output downsampled to the input size vs the
  input (PSNR, SSIM, LPIPS when its weights are available), thresholds in
  ``DEFAULT_THRESHOLDS`` / ``final_filters.consistency`` of the config;
* :mod:`.regions` - region-level artifacts: 10 patches of 768 px (6 highest Sobel variance +
  4 seeded by the image id), VLM judge, drop if more than one is flagged;
* :mod:`.instances` - instance-level artifacts: the hook (crops arrive with the captions stage);
* :mod:`.judging` - the judge-call contract shared by the last two (``judge_failed`` is never
  a pass).
"""
