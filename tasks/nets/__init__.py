"""Plain ``nn.Module`` networks used by the tasks."""

from tasks.nets.mlp import MLP, make_activation

__all__ = ["MLP", "make_activation"]
