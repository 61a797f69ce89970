"""The parity fixtures on a GPU: eval outputs, losses and the long-video engine, fp32, against the official values.

    python tests/gpu_parity.py [--device cuda]

Prints one JSON object with the largest absolute difference of each output (fp32 on a GPU is not bit-identical to
the CPU: expect around 1e-6 to 1e-5) and whether the discrete decisions (sampler, matcher, window ranking, final
rankings) are identical.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from parity_utils import converted_model, model_inputs, training_inputs

from rgnet_hf import RGNetGroundingEngine

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    device = torch.device(args.device)
    report = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
    for name in ("mad_tiny", "ego4d_tiny", "ego4d_pretrain_tiny"):
        fixture = torch.load(ROOT / "tests" / "fixtures" / f"{name}.pt", weights_only=True)
        model = converted_model(fixture).to(device)
        inputs = {k: v.to(device) for k, v in model_inputs(fixture["inputs"]["model"]).items()}
        with torch.no_grad():
            output = model(**inputs)
        expected = fixture["outputs_eval"]
        entry = {
            "logits": float((output.logits.cpu() - expected["pred_logits"]).abs().max()),
            "pred_spans": float((output.pred_spans.cpu() - expected["pred_spans"]).abs().max()),
            "window_logits": float((output.window_logits.cpu() - expected["prob_soft"][:, 0]).abs().max()),
            "saliency": float((output.saliency_scores.cpu() - expected["saliency_scores"]).abs().max()),
            "sampler_identical": bool(torch.equal(output.sampler_selection.cpu(), expected["pred_prop_hard"])),
        }
        batch = training_inputs(fixture, fixture["inputs"]["neg_window_model"] is not None)
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        loss = model(**batch).loss
        entry["total_loss"] = float(loss.detach().cpu())
        entry["total_loss_official"] = float(fixture["total_eval"])
        simulation = fixture["inference_simulation"]
        options = simulation["opt_used"]
        engine = RGNetGroundingEngine(model, top_k_windows=options["topk_window"], max_predictions=100)
        (text, mask), sentence = simulation["batch"]["query_feat"], simulation["batch"]["query_cls_feat"]
        results = engine.ground(
            simulation["video_feat"], text, mask, sentence, seconds_per_feature=options["clip_length"]
        )
        ids = [q["query_id"] for q in simulation["queries"]]
        entry["window_rankings_identical"] = all(
            r.window_order.tolist() == simulation["query_id2windowidx"][i] for i, r in zip(ids, results)
        )
        official = {}
        for row in simulation["fused_after_nms"]:
            key = row.get("query_id") or f"{row['annotation_uid']}_{row['query_idx']}"
            official[key] = np.array(row["predicted_times"], dtype=np.float64)
        clean = [i for i in ids if simulation["nan_prediction_rows_per_query"][i] == 0]
        entry["fused_rankings_max_diff_clean_queries"] = max(
            float(np.abs(results[ids.index(i)].rankings["fused"] - official[i]).max())
            if results[ids.index(i)].rankings["fused"].shape == official[i].shape
            else float("inf")
            for i in clean
        )
        report[name] = entry
    print(json.dumps(report))


if __name__ == "__main__":
    main()
