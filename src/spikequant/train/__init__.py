"""Direct (surrogate-gradient) training: recipe schema, trainer, evaluation, recipe runner."""

from .recipe import validate_recipe
from .trainer import Trainer, evaluate, lr_factor, resolve_checkpoint

__all__ = ["Trainer", "evaluate", "lr_factor", "resolve_checkpoint", "validate_recipe"]
