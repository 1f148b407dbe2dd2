"""A helper two test modules share (tests/ is on sys.path under pytest's default import mode)."""

import torch


def edited(source, target, edit):
    """Load the checkpoint at ``source``, apply ``edit(state)`` in place, save it at ``target``; return ``target``."""
    state = torch.load(source, weights_only=True)
    edit(state)
    torch.save(state, target)
    return target
