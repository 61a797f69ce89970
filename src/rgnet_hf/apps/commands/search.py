"""`rgnet-hf search`: the best moments of a whole video library for query sentences."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import check_device, load_array, lock_output_for_run, looks_like_a_path, process_state


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("search", help="search a video library indexed by `rgnet-hf index`")
    parser.add_argument("--index", required=True, help="the library's index folder")
    parser.add_argument("--model", required=True, help="the RGNet model folder or Hub id the index was built for")
    parser.add_argument("--query", action="append", default=None, help="a query sentence (repeat for several)")
    parser.add_argument(
        "--queries", default=None, help="a text file of query sentences, one per line (blank lines are skipped)"
    )
    parser.add_argument(
        "--output",
        default=None,
        help="write the results as JSON Lines (one {index, query, moments} object per query, in query order); "
        "needed under `accelerate launch`, which shares the queries out to its processes",
    )
    parser.add_argument("--batch-size", type=int, default=16, help="queries searched together (16)")
    parser.add_argument("--text", default=None, help="query token features (Lq, Dt) or (Q, Lq, Dt), instead of --query")
    parser.add_argument("--text-key", default=None)
    parser.add_argument("--sentence", default=None, help="with --text: sentence features (Ds,) or (Q, Ds)")
    parser.add_argument("--sentence-key", default=None)
    parser.add_argument("--top-k", type=int, default=10, help="moments per query (10)")
    parser.add_argument("--depth", type=int, default=200, help="segments the pre-filter takes per query (200)")
    parser.add_argument("--exhaustive", action="store_true", help="score every window of every video (no pre-filter)")
    parser.add_argument("--device", default=None, help="e.g. cpu, cuda, cuda:1")
    parser.add_argument(
        "--memory-budget-gib",
        type=float,
        default=2.0,
        help="memory the engine may use for a batch of queries (2); on a CPU, 0.25 searches one query at a time as "
        "fast with less memory (docs/library_search.md)",
    )
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16"],
        help="the model's dtype (float32): bfloat16 is faster on GPUs and on CPUs with native bfloat16 (AVX-512 BF16, "
        "AMX), slower elsewhere; rankings move by its rounding (docs/library_search.md)",
    )
    parser.add_argument(
        "--segment-windows",
        default="overlapping",
        choices=["overlapping", "central"],
        help="candidates of each segment the pre-filter finds: every window overlapping it (overlapping), or the one "
        "window centred on it (central: about half the windows to score)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(handler=run)
    return parser


def _format(results) -> str:
    lines = []
    for number, result in enumerate(results):
        lines.append(result.query if result.query is not None else f"query {number}")
        lines.append(f"  {'rank':>4}  {'video':<24}  {'start (s)':>10}  {'end (s)':>10}  {'score':>7}")
        for rank, moment in enumerate(result.moments, 1):
            lines.append(
                f"  {rank:>4}  {moment.key:<24}  {moment.start:>10.2f}  {moment.end:>10.2f}  {moment.score:>7.3f}"
            )
    return "\n".join(lines)


def _read_queries(path: str) -> list[str]:
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"--queries {path}: no such file")
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise ValueError(f"--queries {path} is not UTF-8 text (one sentence per line)") from error
    queries = [line.strip() for line in lines if line.strip()]
    if not queries:
        raise ValueError(f"--queries {path} holds no query sentence")
    return queries


def _write_jsonl(path: str | Path, lines: list[dict]) -> None:
    """All lines to `OUTPUT.tmp`, then renamed: a failed run leaves no half-written output."""
    import os

    output = Path(path)
    temporary = output.with_name(output.name + ".tmp")
    try:
        with temporary.open("w", encoding="utf-8") as handle:
            for line in lines:
                handle.write(json.dumps(line) + "\n")
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    os.replace(temporary, output)


def _lines(results, indices) -> list[dict]:
    return [
        {"index": int(index), "query": result.query, "moments": [moment.to_dict() for moment in result.moments]}
        for index, result in zip(indices, results)
    ]


def _gather(output: str, lines: list[dict], state) -> list[dict] | None:
    """Each process's lines through a part file `OUTPUT.parts/<rank>.jsonl`; the main process returns them all in
    query order (the others None) and removes the parts."""
    import shutil

    parts = Path(output).with_name(Path(output).name + ".parts")
    if state.is_main_process:
        shutil.rmtree(parts, ignore_errors=True)
        parts.mkdir(parents=True)
    state.wait_for_everyone()
    _write_jsonl(parts / f"{state.process_index}.jsonl", lines)
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    merged = [json.loads(line) for part in sorted(parts.glob("*.jsonl")) for line in part.read_text().splitlines()]
    shutil.rmtree(parts)
    return sorted(merged, key=lambda line: line["index"])


def _cpu_has_native_bfloat16() -> bool:
    """Whether the CPU multiplies bfloat16 natively (AVX-512 BF16 or AMX; Linux's CPU flags), else whether oneDNN
    supports bfloat16 at all (elsewhere)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
        return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        import torch

        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False


def run(args: argparse.Namespace) -> int:
    from ...search.backends import require_faiss

    require_faiss()

    if args.queries is not None:
        if args.query or args.text:
            raise ValueError("give the queries one way: --queries FILE, --query, or --text")
        args.query = _read_queries(args.queries)
    if (args.text is None) == (not args.query):
        raise ValueError("give the queries as text (--query, repeatable) or as token features (--text, --sentence)")
    for query in args.query or []:
        if not query.strip():
            # refused here, before the queries are shared out: every process must stop alike
            raise ValueError(f"an empty query ({query!r}): give a sentence that describes the moment")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.output is not None and Path(args.output).is_dir():
        raise ValueError(f"--output {args.output} is a folder: give the path of a .jsonl file")
    if args.text is not None and args.sentence is None and not args.exhaustive:
        raise ValueError("--text needs --sentence (the pre-filter's query vectors), or --exhaustive")
    for name in ("top_k", "depth"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not args.memory_budget_gib > 0:
        raise ValueError(f"--memory-budget-gib must be > 0, got {args.memory_budget_gib}")
    check_device(args.device)
    if looks_like_a_path(args.model) and not Path(args.model).is_dir():
        raise FileNotFoundError(f"--model {args.model}: no such model folder")
    state = process_state()
    if state.num_processes > 1 and args.output is None:
        raise ValueError("with several processes (accelerate launch), give --output RESULTS.jsonl")
    import contextlib

    with contextlib.ExitStack() as stack:
        if args.output is not None:
            # Two runs on one output would delete each other's part files under accelerate launch.
            lock_output_for_run(stack, args.output, state)
        return _search(args, state)


def _search(args: argparse.Namespace, state) -> int:
    import torch

    from ...search.library import VideoLibrary

    dtype = torch.bfloat16 if args.dtype == "bfloat16" else None
    device = args.device or state.device
    if dtype is not None and torch.device(device).type == "cpu" and not _cpu_has_native_bfloat16():
        print(
            "warning: this CPU has no native bfloat16 (AVX-512 BF16 or AMX): --dtype bfloat16 runs slower than float32",
            file=sys.stderr,
        )
    library = VideoLibrary.from_folders(
        args.index, args.model, device=device, dtype=dtype, segment_windows=args.segment_windows
    )
    library.engine.memory_budget_bytes = int(args.memory_budget_gib * 2**30)
    options = {"top_k": args.top_k, "depth": args.depth, "exhaustive": args.exhaustive}
    if args.query:
        num_queries = len(args.query)
    else:
        text = load_array(args.text, args.text_key)
        text = text[None] if text.ndim == 2 else text
        sentence = load_array(args.sentence, args.sentence_key) if args.sentence else None
        num_queries = len(text)
    # Process r of n takes queries r, r + n, ...: every process loads the model and the index once.
    mine = list(range(state.process_index, num_queries, state.num_processes))
    results = []
    for start in range(0, len(mine), args.batch_size):
        batch = mine[start : start + args.batch_size]
        if args.query:
            results.extend(library.search([args.query[index] for index in batch], **options))
        else:
            batch_sentence = None if sentence is None else sentence.reshape(num_queries, -1)[batch]
            results.extend(library.search(text_features=text[batch], sentence_features=batch_sentence, **options))
    if args.output is not None:
        lines = _lines(results, mine)
        if state.num_processes > 1:
            lines = _gather(args.output, lines, state)
            if lines is None:
                return 0
        _write_jsonl(args.output, lines)
        shared = f" from {state.num_processes} processes" if state.num_processes > 1 else ""
        print(f"{len(lines)} queries{shared} -> {args.output}")
    elif args.json:
        print(json.dumps([[moment.to_dict() for moment in result.moments] for result in results], indent=2))
    else:
        print(_format(results))
    return 0
