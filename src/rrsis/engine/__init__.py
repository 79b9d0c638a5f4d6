"""Training engine: Lightning module and datamodule, loss, optimiser/schedule, ``rrsis train``.

Entry points: :func:`rrsis.engine.train.train` and :mod:`rrsis.engine.presets` (hyper-parameters).
Submodules are imported on use so that ``import rrsis`` does not pull in Lightning.
"""
