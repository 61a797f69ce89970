"""RGNet training objective: Hungarian matching of moment queries to ground-truth spans and every loss term."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers.utils import ModelOutput

from .configuration_rgnet import RGNetConfig

FOREGROUND, BACKGROUND = 0, 1

# Per window: `spans` (num_spans, 2) (centre, width), `saliency_positive_frames` / `saliency_negative_frames` (P,).
Labels = list[dict[str, torch.Tensor]]
# Per window: (query indices, target indices) of the Hungarian assignment, int64 tensors of one length.
MatchIndices = list[tuple[torch.Tensor, torch.Tensor]]


def span_cxw_to_xx(spans: torch.Tensor) -> torch.Tensor:
    """(centre, width) -> (start, end), shape `(..., 2)`."""
    centre, width = spans.unbind(-1)
    return torch.stack([centre - 0.5 * width, centre + 0.5 * width], dim=-1)


def generalized_temporal_iou(spans1: torch.Tensor, spans2: torch.Tensor) -> torch.Tensor:
    """Generalised IoU of every pair of 1-d spans given as (start, end): `(N, 2)`, `(M, 2)` -> `(N, M)`."""
    length1 = spans1[:, 1] - spans1[:, 0]
    length2 = spans2[:, 1] - spans2[:, 0]
    left = torch.max(spans1[:, None, 0], spans2[None, :, 0])
    right = torch.min(spans1[:, None, 1], spans2[None, :, 1])
    intersection = (right - left).clamp(min=0)
    union = length1[:, None] + length2[None, :] - intersection
    iou = intersection / union
    hull = torch.max(spans1[:, None, 1], spans2[None, :, 1]) - torch.min(spans1[:, None, 0], spans2[None, :, 0])
    hull = hull.clamp(min=0)
    return iou - (hull - union) / hull


class RGNetHungarianMatcher:
    """One-to-one assignment of moment queries to ground-truth spans, per window.

    Cost = `span_cost * L1(centre, width) - giou_cost * gIoU - class_cost * p(foreground)`.
    """

    def __init__(self, span_cost: float, giou_cost: float, class_cost: float):
        self.span_cost, self.giou_cost, self.class_cost = span_cost, giou_cost, class_cost

    @torch.no_grad()
    def cost_matrix(self, logits: torch.Tensor, spans: torch.Tensor, target_spans: torch.Tensor) -> torch.Tensor:
        """`(batch, Nq, 2)`, `(batch, Nq, 2)`, `(num_targets, 2)` -> `(batch, Nq, num_targets)`."""
        batch_size, num_queries = logits.shape[:2]
        foreground = logits.flatten(0, 1).softmax(-1)[:, FOREGROUND]
        flat_spans = spans.flatten(0, 1)
        cost_span = torch.cdist(flat_spans, target_spans, p=1)
        cost_giou = -generalized_temporal_iou(span_cxw_to_xx(flat_spans), span_cxw_to_xx(target_spans))
        cost = self.span_cost * cost_span + self.giou_cost * cost_giou - self.class_cost * foreground[:, None]
        return cost.view(batch_size, num_queries, -1)

    @torch.no_grad()
    def __call__(self, logits: torch.Tensor, spans: torch.Tensor, labels: Labels) -> MatchIndices:
        """Returns, per window, `(query_indices, target_indices)` as int64 tensors."""
        counts = [len(label["spans"]) for label in labels]
        target_spans = torch.cat([label["spans"] for label in labels]).to(spans.dtype)
        cost = self.cost_matrix(logits, spans, target_spans).cpu()
        device = logits.device
        if all(count == 1 for count in counts):
            # One target per window (every released recipe): the assignment is the cheapest query.
            block = cost[torch.arange(len(counts)), :, torch.arange(len(counts))]  # (batch, Nq)
            best = block.argmin(-1)
            zero = torch.zeros(1, dtype=torch.int64, device=device)
            return [(best[index : index + 1].to(device), zero) for index in range(len(counts))]
        from scipy.optimize import linear_sum_assignment

        indices = []
        for index, block in enumerate(cost.split(counts, -1)):
            query_index, target_index = linear_sum_assignment(block[index].numpy())
            indices.append(
                (
                    torch.as_tensor(query_index, dtype=torch.int64, device=device),
                    torch.as_tensor(target_index, dtype=torch.int64, device=device),
                )
            )
        return indices


class RGNetLoss:
    """Every loss term of the RGNet recipes, computed from an [`RGNetVideoGroundingOutput`]-like object."""

    def __init__(self, config: RGNetConfig):
        self.config = config
        self.matcher = RGNetHungarianMatcher(
            config.matcher_span_cost, config.matcher_giou_cost, config.matcher_class_cost
        )

    @property
    def weight_dict(self) -> dict[str, float]:
        config = self.config
        weights = {
            "loss_span": config.span_loss_coefficient,
            "loss_giou": config.giou_loss_coefficient,
            "loss_label": config.label_loss_coefficient,
            "loss_saliency": config.saliency_loss_coefficient,
        }
        if config.window_retrieval_loss_coefficient != 0:
            weights["loss_retrieval"] = config.window_retrieval_loss_coefficient
        if config.sampler_attention_loss_coefficient != 0:
            weights["loss_sampler_attention"] = config.sampler_attention_loss_coefficient
        if config.auxiliary_loss:
            for layer in range(config.num_decoder_layers - 1):
                for name in ("loss_span", "loss_giou", "loss_label"):
                    weights[f"{name}_{layer}"] = weights[name]
        return weights

    # ---------------------------------------------------------------- individual terms
    def span_losses(self, spans: torch.Tensor, labels: Labels, indices: MatchIndices) -> dict[str, torch.Tensor]:
        """L1 and gIoU of the matched (centre, width) spans `(batch_size, num_queries, 2)`."""
        batch_index, query_index = _flat_indices(indices)
        matched = spans[batch_index, query_index]
        targets = torch.cat([label["spans"][target] for label, (_, target) in zip(labels, indices)]).to(spans.dtype)
        loss_span = F.l1_loss(matched, targets, reduction="none").mean()
        giou = torch.diag(generalized_temporal_iou(span_cxw_to_xx(matched), span_cxw_to_xx(targets)))
        return {"loss_span": loss_span, "loss_giou": (1 - giou).mean()}

    def label_losses(
        self, logits: torch.Tensor, indices: MatchIndices, negative_logits: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Foreground / background cross-entropy of `logits` `(batch_size, num_queries, 2)` (and of the negative
        windows' `(batch_size, num_queries, 2)`, all background), plus the `class_error` of the matched queries."""
        batch_index, query_index = _flat_indices(indices)
        target_classes = torch.full(logits.shape[:2], BACKGROUND, dtype=torch.int64, device=logits.device)
        target_classes[batch_index, query_index] = FOREGROUND
        all_logits = logits
        if negative_logits is not None:
            # Every query of a negative window is background.
            all_logits = torch.cat([logits, negative_logits], dim=1)
            target_classes = torch.cat([target_classes, torch.full_like(target_classes, BACKGROUND)], dim=1)
        class_weight = all_logits.new_tensor([1.0, self.config.background_class_weight])
        # Official: a plain mean of the weighted per-entry losses (not the weight-normalised mean).
        loss_label = F.cross_entropy(all_logits.transpose(1, 2), target_classes, class_weight, reduction="none").mean()
        matched = logits[batch_index, query_index]
        accuracy = (matched.argmax(-1) == FOREGROUND).float().mean() * 100 if len(matched) else logits.new_zeros(())
        return {"loss_label": loss_label, "class_error": (100 - accuracy).detach()}

    def saliency_loss(
        self,
        saliency_scores: torch.Tensor,
        labels: Labels,
        negative_window_outputs: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Hinge between frames inside and outside the moment on `saliency_scores` `(batch_size, num_frames)`, plus
        the negative-window terms."""
        margin = self.config.saliency_margin
        positive_frames = torch.stack([label["saliency_positive_frames"] for label in labels]).to(
            saliency_scores.device
        )
        negative_frames = torch.stack([label["saliency_negative_frames"] for label in labels]).to(
            saliency_scores.device
        )
        batch_size, num_pairs = positive_frames.shape
        rows = torch.arange(batch_size, device=saliency_scores.device)[:, None]
        positive_scores = saliency_scores[rows, positive_frames]
        negative_scores = saliency_scores[rows, negative_frames]
        normaliser = 2 / (batch_size * num_pairs)
        loss = (margin + negative_scores - positive_scores).clamp(min=0).sum() * normaliser
        if negative_window_outputs is not None:
            negative_window_scores = negative_window_outputs["saliency_scores"]
            # Official quirk: the maximum ranges over padded frames too.
            hardest = negative_window_scores.max(dim=1).values[:, None]
            loss = loss + (margin + hardest - positive_scores).clamp(min=0).sum() * normaliser
            valid = negative_window_outputs["video_mask"].to(negative_window_scores.dtype)
            # -log(1 - sigmoid(s)) == softplus(s): every frame of a negative window should be non-salient.
            loss = loss + (F.softplus(negative_window_scores) * valid).sum(dim=1).mean()
        return loss

    def retrieval_loss(
        self,
        window_retrieval_logits: torch.Tensor | None,
        window_logits: torch.Tensor,
        negative_window_outputs: dict[str, torch.Tensor] | None,
    ) -> torch.Tensor | None:
        """Symmetric InfoNCE over the `(batch_size, batch_size)` text x window logits; without in-batch pairs, a hinge
        against negative windows' logits when they carry some; otherwise None."""
        config = self.config
        if window_retrieval_logits is not None:
            scaled = window_retrieval_logits / config.retrieval_temperature
            targets = torch.arange(scaled.shape[0], device=scaled.device)
            return 0.5 * (F.cross_entropy(scaled, targets) + F.cross_entropy(scaled.t(), targets))
        if negative_window_outputs is not None and "window_logits" in negative_window_outputs:
            hinge = config.saliency_margin + negative_window_outputs["window_logits"] - window_logits
            return hinge.clamp(min=0).sum() * 2 / window_logits.shape[0]
        return None

    def sampler_attention_loss(
        self, sampler_logits: torch.Tensor, labels: Labels, video_mask: torch.Tensor
    ) -> torch.Tensor:
        """The paper's intra-clip attention loss: the sampler should pick the frames of the moment."""
        frame_logits = sampler_logits[:, 1:]
        valid = video_mask.to(frame_logits.dtype)
        lengths = valid.sum(1, keepdim=True)
        frame_index = torch.arange(frame_logits.shape[1], device=frame_logits.device, dtype=frame_logits.dtype)
        inside = torch.zeros_like(frame_logits)
        for span_index in range(max(len(label["spans"]) for label in labels)):
            spans = torch.stack([label["spans"][min(span_index, len(label["spans"]) - 1)] for label in labels]).to(
                frame_logits
            )
            bounds = span_cxw_to_xx(spans) * lengths
            overlaps = (frame_index[None] < bounds[:, 1:2]) & (frame_index[None] + 1 > bounds[:, 0:1])
            inside = torch.maximum(inside, overlaps.to(inside.dtype))
        loss = F.binary_cross_entropy_with_logits(frame_logits, inside, reduction="none")
        return ((loss * valid).sum(1) / lengths.squeeze(1)).mean()

    # ---------------------------------------------------------------- everything
    def __call__(
        self,
        outputs: ModelOutput,
        labels: Labels,
        video_mask: torch.Tensor,
        sampler_logits: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """
        Args:
            outputs: an [`RGNetVideoGroundingOutput`] (`logits`, `pred_spans`, `saliency_scores`, `window_logits`,
                `window_retrieval_logits`, `auxiliary_outputs`, `negative_window_outputs`).
            labels: per window, `spans` `(num_spans, 2)`, `saliency_positive_frames` / `saliency_negative_frames`
                `(num_pairs,)`.
            video_mask (`(batch_size, num_frames)`), sampler_logits (`(batch_size, 1 + num_frames)`).
        Returns:
            the weighted total and the dictionary of unweighted terms.
        """
        config = self.config
        labels = [{key: value.to(outputs.logits.device) for key, value in label.items()} for label in labels]
        for index, label in enumerate(labels):
            if label["spans"].ndim != 2 or label["spans"].shape[-1] != 2 or len(label["spans"]) == 0:
                raise ValueError(
                    f"labels[{index}]['spans'] must have shape (num_spans >= 1, 2), got {tuple(label['spans'].shape)}"
                )
        negative_window_outputs = outputs.negative_window_outputs
        negative_logits = negative_window_outputs["logits"] if negative_window_outputs is not None else None

        indices = self.matcher(outputs.logits, outputs.pred_spans, labels)
        losses = {}
        losses.update(self.span_losses(outputs.pred_spans, labels, indices))
        losses.update(self.label_losses(outputs.logits, indices, negative_logits))
        losses["loss_saliency"] = self.saliency_loss(outputs.saliency_scores, labels, negative_window_outputs)
        if config.window_retrieval_loss_coefficient != 0:
            retrieval = self.retrieval_loss(
                outputs.window_retrieval_logits, outputs.window_logits, negative_window_outputs
            )
            if retrieval is not None:
                losses["loss_retrieval"] = retrieval
        if config.sampler_attention_loss_coefficient != 0 and sampler_logits is not None:
            losses["loss_sampler_attention"] = self.sampler_attention_loss(sampler_logits, labels, video_mask)
        if config.auxiliary_loss:
            for layer, auxiliary in enumerate(outputs.auxiliary_outputs or []):
                auxiliary_indices = self.matcher(auxiliary["logits"], auxiliary["pred_spans"], labels)
                terms = self.span_losses(auxiliary["pred_spans"], labels, auxiliary_indices)
                terms.update(self.label_losses(auxiliary["logits"], auxiliary_indices, negative_logits))
                losses.update({f"{name}_{layer}": value for name, value in terms.items()})
        weights = self.weight_dict
        total = sum(weights[name] * value for name, value in losses.items() if name in weights)
        return total, losses


def _flat_indices(indices: MatchIndices) -> tuple[torch.Tensor, torch.Tensor]:
    batch_index = torch.cat([torch.full_like(query, index) for index, (query, _) in enumerate(indices)])
    query_index = torch.cat([query for query, _ in indices])
    return batch_index, query_index


__all__ = ["RGNetHungarianMatcher", "RGNetLoss", "generalized_temporal_iou", "span_cxw_to_xx"]
