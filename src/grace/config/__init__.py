"""Training configuration: documented dataclasses, packaged presets, the one list of methods,
modes and variants, and the ``--section.field VALUE`` overrides of the command line.

May import: models, errors.
(models: the dtypes, poolings and system prompt the settings choose from.)
"""
