"""Weighted k-nearest-neighbour classification on L2-normalised frozen features (the DINO protocol)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def knn_predict(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor, num_classes: int,
                k: int = 20, temperature: float = 0.07, chunk: int = 1024) -> torch.Tensor:
    """Predicted labels (Q,) for queries (Q, D) from a labelled bank (M, D), on the tensors' device.

    Each query's k most cosine-similar bank entries vote for their label with weight exp(similarity / T).
    """
    bank = F.normalize(bank.float(), dim=1)
    k = min(k, bank.shape[0])
    predictions = []
    for start in range(0, queries.shape[0], chunk):
        q = F.normalize(queries[start : start + chunk].float(), dim=1)
        similarity, index = (q @ bank.T).topk(k, dim=1)  # (q, k)
        votes = torch.zeros(q.shape[0], num_classes, device=q.device)
        votes.scatter_add_(1, bank_labels[index], (similarity / temperature).exp())
        predictions.append(votes.argmax(dim=1))
    return torch.cat(predictions)


def top1(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    """Accuracy in percent."""
    return 100.0 * (predictions == labels).float().mean().item()
