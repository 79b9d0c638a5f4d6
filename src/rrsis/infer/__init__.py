"""Inference: one forward path, from an image (or a scene) and expressions to masks.

- :mod:`~rrsis.infer.predictor`: :class:`Segmenter`, the one path every caller goes through.
- :mod:`~rrsis.infer.network`: the model's batched forwards; :mod:`~rrsis.infer.reading`: the
  composition rules on the network's outputs, and what decided each mask (:class:`Prediction`);
  :mod:`~rrsis.infer.compose`: the rules themselves.
- :mod:`~rrsis.infer.images`: accepted image inputs; :mod:`~rrsis.infer.tiling`: windows and
  their blending.
- :mod:`~rrsis.infer.scene` (large GeoTIFFs, with :mod:`~rrsis.infer.raster`),
  :mod:`~rrsis.infer.batch` (folders of images), :mod:`~rrsis.infer.demo` (bundled samples);
  :mod:`~rrsis.infer.outputs` and :mod:`~rrsis.infer.vector` write masks, overlays, polygons.

Submodules are imported on use, so that ``import rrsis.infer`` stays light.
"""
