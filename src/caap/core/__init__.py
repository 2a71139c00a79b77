"""Tensors only: the Attribution result, contexts, scores, targets, groups, layer sets, budgets, model-state
guards and workspaces. Nothing here knows a model's architecture (that is :mod:`caap.adapters`)."""
