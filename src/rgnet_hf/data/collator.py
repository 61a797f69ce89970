"""Batches of training samples in the exact keyword arguments of `RGNetForVideoGrounding.forward`."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..feature_extraction_rgnet import pad_sequences

__all__ = ["RGNetTrainingCollator", "pad_sequences"]


@dataclass
class RGNetTrainingCollator:
    """Collates items of [`RGNetTrainingDataset`] into the model's forward arguments.

    Args:
        negative_windows (`bool`): add `negative_video_features` / `negative_video_mask` (Ego4D fine-tuning).
        return_metadata (`bool`): add `"metadata"` (a list of per-item dicts: query id, window...), which the training
            loop must pop before calling the model.
        max_text_length (`int`, *optional*): keep at most this many tokens per query (the dataset already cuts to
            `config.max_text_length`; this is a safeguard for items built elsewhere).

    Output (B = number of items):
        - `video_features` `torch.FloatTensor (B, L, Dv)`: the positive windows, zero-padded at the end to the longest;
        - `video_mask` `torch.FloatTensor (B, L)`: 1 = valid frame;
        - `text_features` `torch.FloatTensor (B, Lq, Dt)` and `text_mask` `torch.FloatTensor (B, Lq)`;
        - `labels`: a list of B dicts `{"spans": FloatTensor (1, 2) (centre, width) normalised by the window's valid
          length, "saliency_positive_frames": LongTensor (P,), "saliency_negative_frames": LongTensor (P,)}`;
        - `negative_video_features` `(B, Ln, Dv)` and `negative_video_mask` `(B, Ln)`, only with
          `negative_windows=True`.

    Items are not expanded into text-window pairs: the model pairs the B texts with the B windows itself.
    """

    negative_windows: bool = False
    return_metadata: bool = False
    max_text_length: int | None = None

    def __call__(self, items: list[dict]) -> dict:
        if not items:
            raise ValueError("cannot collate an empty batch")
        video_features, video_mask = pad_sequences([item["video_features"] for item in items], "video_features")
        text_features, text_mask = pad_sequences(
            [item["text_features"][: self.max_text_length] for item in items], "text_features"
        )
        labels = []
        for item in items:
            label = item["labels"]
            labels.append(
                {
                    "spans": torch.as_tensor(label["spans"], dtype=torch.float32).reshape(1, 2),
                    "saliency_positive_frames": torch.as_tensor(label["saliency_positive_frames"], dtype=torch.long),
                    "saliency_negative_frames": torch.as_tensor(label["saliency_negative_frames"], dtype=torch.long),
                }
            )
        batch = {
            "video_features": video_features,
            "video_mask": video_mask,
            "text_features": text_features,
            "text_mask": text_mask,
            "labels": labels,
        }
        if self.negative_windows:
            if any("negative_video_features" not in item for item in items):
                raise ValueError(
                    "the collator was built with negative_windows=True but the items have no negative window: build "
                    "the dataset with negative_windows=True"
                )
            batch["negative_video_features"], batch["negative_video_mask"] = pad_sequences(
                [item["negative_video_features"] for item in items], "negative_video_features"
            )
        if self.return_metadata:
            batch["metadata"] = [item.get("metadata", {}) for item in items]
        return batch
