"""The engine: what turns a config into a run, kept apart from the problems.

- :mod:`~tasks.engine.registry`: tasks, datamodules and config packages found through entry
  points (the library's and plugins'), loaded lazily, their failures reported per plugin;
- :mod:`~tasks.engine.hydra_config`: Hydra's config search path and composition;
- :mod:`~tasks.engine.cli`: ``python -m tasks`` and its subcommands (``list``, ``doctor``,
  ``export``, ``serve``);
- :mod:`~tasks.engine.runner`: a composed config to a trained, tested, predicting or
  exporting run (one function per mode), its files and its summary;
- :mod:`~tasks.engine.console`: what a run prints (the closing block, one-line errors);
- :mod:`~tasks._files`: atomic writes and the run folder's rules;
- :mod:`~tasks.engine.checkpoint_io`: checkpoint writes that never leave half a file.

The public entry points are elsewhere and stay where they were: :mod:`tasks.api`
(``compose``, ``run``), :mod:`tasks.testing` (the conformance kit), :mod:`tasks.bundle`,
:mod:`tasks.serve`, :mod:`tasks.cv`, :mod:`tasks.doctor`, :mod:`tasks.report`. Problem
modules (``tasks.tabular``, ``tasks.image``, ...) never import the engine (an import-linter
contract in ``pyproject.toml``); what both sides share is below the engine: atomic writes
and run-folder rules (:mod:`tasks._files`), the shared leaf (:mod:`tasks.batches`) and the
errors (:mod:`tasks.errors`).
"""
