"""Activation modules (torch). Import a family's class through the registry's module_path."""

from .base import ActivationModule

__all__ = ["ActivationModule"]
