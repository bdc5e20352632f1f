"""Training configuration: documented dataclasses, packaged presets, the one list of methods, modes and variants."""
