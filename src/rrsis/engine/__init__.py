"""Training engine: ``rrsis train`` and ``rrsis benchmark`` as a library.

* :mod:`~rrsis.engine.presets` (the recipe, :class:`TrainConfig`, and :func:`resolve_recipe`)
  and :mod:`~rrsis.engine.config` (the run, :class:`TrainRun`): what a run is;
* :mod:`~rrsis.engine.train`: ``train(run)``, building and running it with Lightning;
* :mod:`~rrsis.engine.transforms`, :mod:`~rrsis.engine.sampling`,
  :mod:`~rrsis.engine.datamodule`: samples to batches; :mod:`~rrsis.engine.module`,
  :mod:`~rrsis.engine.losses`, :mod:`~rrsis.engine.optim`, :mod:`~rrsis.engine.auxiliary`:
  the training step; :mod:`~rrsis.engine.callbacks`: time budget and stops;
* :mod:`~rrsis.engine.benchmark`: several models, one recipe, scored once on test;
  :mod:`~rrsis.engine.timing`: where training time goes.

Submodules are imported on use so that ``import rrsis`` does not pull in Lightning.
"""
