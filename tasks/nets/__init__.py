"""Plain ``nn.Module`` networks used by the tasks."""

from tasks.nets.mlp import MLP, TabularNet, make_activation

__all__ = ["MLP", "TabularNet", "make_activation"]
