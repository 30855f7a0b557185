"""Prefix tries over token ids, flattened into tensors so that constrained decoding runs on the device.

Constrained decoding lets the language model choose only among the admissible commands: each env's
commands (tokenized, each followed by the terminator token) are put in a prefix trie, and at every
generation step the logits of the tokens that do not continue a command are masked out. The tries of
a batch are flattened into two tensors,

    child_tokens[b, node, k]  the k-th token allowed at `node` of env b's trie (-1: none)
    child_nodes[b, node, k]   the node reached by taking that token

so that a step of all envs is two gathers, with no host synchronization per token. Node 0 is the
root; node 1 is the sink reached after the terminator, whose only child is the terminator itself
(rows that have finished keep "generating" a valid token, which the caller masks out).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

ROOT, SINK = 0, 1


class TokenTrie:
    """A prefix trie of token-id sequences; every sequence ends with the terminator token."""

    def __init__(self, sequences: Sequence[Sequence[int]], terminator: int):
        self.terminator = terminator
        self.children: list[dict[int, int]] = [{}, {terminator: SINK}]  # root, sink
        for seq in sequences:
            node = ROOT
            for tok in list(seq) + [terminator]:
                nxt = self.children[node].get(tok)
                if nxt is None:
                    if tok == terminator:
                        nxt = SINK
                    else:
                        nxt = len(self.children)
                        self.children.append({})
                    self.children[node][tok] = nxt
                node = nxt
                if node == SINK:
                    break

    @property
    def num_nodes(self) -> int:
        return len(self.children)

    @property
    def width(self) -> int:
        """The largest number of children of a node (the branching factor the tensors need)."""
        return max(len(c) for c in self.children)

    def allowed(self, prefix: Sequence[int]) -> list[int]:
        """Tokens that may follow `prefix` (empty if the prefix leaves the trie)."""
        node = ROOT
        for tok in prefix:
            nxt = self.children[node].get(tok)
            if nxt is None:
                return []
            node = nxt
        return sorted(self.children[node])


@dataclass
class BatchedTrie:
    """The tries of a batch as tensors (see the module docstring), on one device."""

    child_tokens: Tensor  # (B, num_nodes, width) long, -1 padded
    child_nodes: Tensor  # (B, num_nodes, width) long

    @classmethod
    def build(cls, tries: Sequence[TokenTrie], device: torch.device | str) -> BatchedTrie:
        nodes = max(t.num_nodes for t in tries)
        width = max(t.width for t in tries)
        toks = torch.full((len(tries), nodes, width), -1, dtype=torch.long)
        nxts = torch.full((len(tries), nodes, width), SINK, dtype=torch.long)
        for b, trie in enumerate(tries):
            for node, children in enumerate(trie.children):
                if children:
                    items = sorted(children.items())
                    toks[b, node, : len(items)] = torch.tensor([k for k, _ in items])
                    nxts[b, node, : len(items)] = torch.tensor([v for _, v in items])
        return cls(toks.to(device), nxts.to(device))

    @property
    def width(self) -> int:
        return self.child_tokens.shape[-1]

    def root(self) -> Tensor:
        return torch.full(
            (self.child_tokens.shape[0],), ROOT, dtype=torch.long, device=self.child_tokens.device
        )

    def allowed(self, nodes: Tensor) -> Tensor:
        """(B, width) allowed token ids at each row's node, -1 padded."""
        rows = torch.arange(nodes.shape[0], device=nodes.device)
        return self.child_tokens[rows, nodes]

    def advance(self, nodes: Tensor, tokens: Tensor) -> Tensor:
        """The node each row reaches by taking `tokens` (which must be allowed)."""
        rows = torch.arange(nodes.shape[0], device=nodes.device)
        hit = self.child_tokens[rows, nodes] == tokens[:, None]
        k = hit.float().argmax(-1)
        return self.child_nodes[rows, nodes, k]


def mask_logits(logits: Tensor, allowed: Tensor) -> Tensor:
    """Logits with every token outside `allowed` (…, K) ids (-1 padded) set to -inf.

    Works for any leading shape: logits (…, V), allowed (…, K). A row with nothing allowed (all -1,
    e.g. the steps after an action ended) is left unmasked, so it never becomes NaN.
    """
    vocab = logits.shape[-1]
    keep = torch.zeros((*logits.shape[:-1], vocab + 1), dtype=torch.bool, device=logits.device)
    keep.scatter_(-1, torch.where(allowed >= 0, allowed, vocab), True)  # padding lands in the extra column
    keep = keep[..., :vocab] | (allowed < 0).all(-1, keepdim=True)  # nothing allowed (padding): no mask
    return logits.masked_fill(~keep, float("-inf"))


def command_token_ids(tokenizer, commands: Sequence[str], max_tokens: int) -> list[list[int]]:
    """Token ids of each command as the policy generates it (after the prompt's '>': a leading space),
    leaving out commands that need more than `max_tokens` tokens (they could not be finished)."""
    out = []
    for cmd in commands:
        ids = tokenizer(" " + cmd, add_special_tokens=False)["input_ids"]
        if 0 < len(ids) <= max_tokens:
            out.append(list(ids))
    return out
