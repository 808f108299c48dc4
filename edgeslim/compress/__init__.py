"""Compression techniques, one module per technique.

Each technique is a small verb ``(model, Config, *, ctx: StageContext) -> StageOutcome``
whose config is a frozen dataclass that round-trips through the recipe TOML.
Stages take and return plain (stripped) tf_keras models.
"""
