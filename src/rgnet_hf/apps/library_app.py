"""`rgnet-hf app --index`: a web page that searches a whole video library and plays the moments it finds.

The search goes through the `video-grounding` pipeline on a library input (`{"library": INDEX_DIR, "text": [...]}`,
the same moments as `rgnet-hf search`). Results are grouped by video: one timeline per video with results, its
moments marked with their rank and score. A chosen moment is played as a clip cut from its video (the page never
serves a library file itself, only the clips cut from the videos the results point to). Video paths come from the
index manifest; a video missing on disk still gets its timeline, with a note, but no clip.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .web_app import (
    DEFAULT_MAX_QUEUE,
    KEPT_CLIPS,
    LANE_PX,
    MAX_TOP_K,
    USER_ERRORS,
    _clock,
    _positive_limit,
    _short_name,
    cut_clip,
    parse_queries,
    temporary_clip_folder,
)

DEFAULT_TOP_K = 10
DEFAULT_DEPTH = 200
LABEL_MIN_PX = 34  # least drawn width of a library moment: its label ("Q2 #10") fits


@dataclass
class LibraryVideo:
    """A video that results point to: its key, file (None when the manifest names none), length, and whether the
    file is on disk."""

    key: str
    path: Path | None
    duration: float
    exists: bool


@dataclass
class LibraryHits:
    """What one library search found: per query, the ranked moments across videos (best first, the pipeline's dicts
    with `key`, `path`, `start`, `end`, `score`, `query`), and the videos they point to."""

    queries: list[str]
    rankings: list[list[dict[str, Any]]]
    videos: dict[str, LibraryVideo] = field(default_factory=dict)

    def moment_choices(self) -> list[tuple[str, str]]:
        """`(label, "query_index:rank_index")` for every moment, in query then rank order."""
        choices = []
        for query_index, moments in enumerate(self.rankings):
            for rank_index, moment in enumerate(moments):
                label = (
                    f"Q{query_index + 1} #{rank_index + 1}: {moment['key']} {moment['start']:.2f}-{moment['end']:.2f} s"
                    f" (score {moment['score']:.3f})"
                )
                choices.append((label[:120], f"{query_index}:{rank_index}"))
        return choices

    def moment(self, choice: str) -> dict[str, Any]:
        query_index, rank_index = (int(part) for part in choice.split(":"))
        return self.rankings[query_index][rank_index]

    def by_video(self) -> list[tuple[LibraryVideo, list[tuple[int, int, dict[str, Any]]]]]:
        """`(video, [(query_index, rank_index, moment), ...])` per video with results, the video of the best moment
        first (ranks compared across queries)."""
        grouped: dict[str, list] = {}
        for query_index, moments in enumerate(self.rankings):
            for rank_index, moment in enumerate(moments):
                grouped.setdefault(moment["key"], []).append((query_index, rank_index, moment))
        order = sorted(grouped, key=lambda key: min((rank, query) for query, rank, _ in grouped[key]))
        return [(self.videos[key], grouped[key]) for key in order]


def render_library_timeline(hits: LibraryHits) -> str:
    """HTML: one timeline per video with results (one lane per moment, in rank order), with a note for a video
    missing on disk, and a table of its moments.

    Each moment carries `data-query-index`, `data-rank`, `data-start`, `data-end` and `data-score`; each video block
    `data-key`, `data-duration` and `data-missing`, so that they can be read back from the page.
    """
    several = len(hits.queries) > 1
    parts = [f'<div class="rgnet-timeline rgnet-library" data-queries="{len(hits.queries)}">']
    if not any(hits.rankings):
        parts.append('<div class="rgnet-notice">No moment found in the library.</div>')
    for video, moments in hits.by_video():
        duration = max(video.duration, 1e-6)
        missing = "true" if not video.exists else "false"
        parts.append(
            f'<div class="rgnet-query rgnet-video" data-key="{html.escape(video.key)}" '
            f'data-duration="{video.duration:.4f}" data-missing="{missing}">'
        )
        shown_path = html.escape(str(video.path) if video.path is not None else "no file recorded")
        parts.append(
            f'<div class="rgnet-query-text">{html.escape(video.key)} <span class="rgnet-path">{shown_path}</span></div>'
        )
        if not video.exists:
            parts.append(
                f'<div class="rgnet-notice">The video file {shown_path} is not on disk: its moments are listed but '
                "cannot be played. Restore the file, or index the video again from where it is now.</div>"
            )
        parts.append(f'<div class="rgnet-track" style="height:{len(moments) * LANE_PX + 4}px">')
        for lane, (query_index, rank_index, moment) in enumerate(moments):
            left = 100 * min(max(moment["start"] / duration, 0.0), 1.0)
            width = 100 * min(max((moment["end"] - moment["start"]) / duration, 0.0), 1.0 - left / 100)
            label = f"Q{query_index + 1} #{rank_index + 1}" if several else f"#{rank_index + 1}"
            span = f"left:min({left:.3f}%, calc(100% - {LABEL_MIN_PX}px));width:max({width:.3f}%, {LABEL_MIN_PX}px)"
            parts.append(
                f'<div class="rgnet-moment" data-query-index="{query_index}" data-rank="{rank_index + 1}" '
                f'data-start="{moment["start"]:.4f}" data-end="{moment["end"]:.4f}" data-score="{moment["score"]:.6f}" '
                f'title="{html.escape(label)}: {moment["start"]:.2f}-{moment["end"]:.2f} s, score '
                f'{moment["score"]:.3f}" style="{span};top:{2 + lane * LANE_PX}px;height:{LANE_PX - 2}px;'
                f'line-height:{LANE_PX - 2}px">{html.escape(label)}</div>'
            )
        parts.append("</div>")
        parts.append(
            f'<div class="rgnet-axis"><span>0:00</span><span>{_clock(video.duration / 2)}</span>'
            f"<span>{_clock(video.duration)}</span></div>"
        )
        parts.append(
            '<table class="rgnet-table"><tr><th>query</th><th>rank</th><th>start (s)</th><th>end (s)</th>'
            "<th>score</th></tr>"
        )
        for query_index, rank_index, moment in moments:
            parts.append(
                f"<tr><td>Q{query_index + 1}</td><td>{rank_index + 1}</td><td>{moment['start']:.2f}</td>"
                f"<td>{moment['end']:.2f}</td><td>{moment['score']:.3f}</td></tr>"
            )
        parts.append("</table></div>")
    parts.append("</div>")
    return "".join(parts)


class LibrarySearchApp:
    """The library page's logic, independent of the page: a `video-grounding` pipeline on a library index, and clip
    cutting from the videos the results point to.

    Args:
        index: the library's index folder (`rgnet-hf index`); opened and checked against the model at once.
        model: a saved RGNet folder or Hub id (the one the index was built for) whose config names a `feature_encoder`.
        device: where the pipeline runs; default: the pipeline's choice.
        pipe: an already built `video-grounding` pipeline (then `model` and `device` are ignored).
        max_queue: how many searches may wait for their turn (None: no limit).
        concurrency: how many searches run at the same time.
    """

    # The page takes no upload: there is no upload limit to enforce, and `launch` serves no file but the clips.
    max_upload_mb = None

    def __init__(
        self,
        index: str | os.PathLike,
        model: str | Path | None = None,
        device: str | None = None,
        pipe=None,
        max_queue: int | None = DEFAULT_MAX_QUEUE,
        concurrency: int = 1,
        segment_windows: str = "overlapping",
    ):
        from ..search.backends import require_faiss
        from ..search.index import LibraryIndex
        from ..search.library import SEGMENT_WINDOWS

        if segment_windows not in SEGMENT_WINDOWS:
            raise ValueError(f"`segment_windows` must be one of {SEGMENT_WINDOWS}, got {segment_windows!r}")
        self.segment_windows = segment_windows

        self.max_queue = _positive_limit("max_queue", max_queue, integer=True)
        self.concurrency = _positive_limit("concurrency", concurrency, integer=True)
        if self.concurrency is None:
            raise ValueError("`concurrency` must be a positive whole number, got None")
        require_faiss()
        self.index_folder = Path(index).resolve()
        # A missing or broken index fails before the model loads.
        self.index = LibraryIndex.open(self.index_folder)
        if pipe is None:
            if model is None:
                raise ValueError("give a model folder (or Hub id) or a pipeline")
            from transformers import pipeline

            import rgnet_hf  # noqa: F401 - registers the pipeline

            pipe = pipeline("video-grounding", model=str(model), device=device)
        self.pipe = pipe
        self.index.check_fits(pipe.model.config)
        if not getattr(pipe.model.config, "feature_encoder", None):
            raise ValueError(
                f"the model {model or pipe.model.name_or_path} names no feature encoder (`feature_encoder` in its "
                "config), so it cannot encode typed sentences; search with `rgnet-hf search --text` instead"
            )
        self.model_name = str(model) if model is not None else getattr(pipe.model, "name_or_path", "model")
        self.clip_folder, self._remove_clips = temporary_clip_folder(self)
        self.clips_cut = 0

    def close(self) -> None:
        """Remove the clip folder (done at garbage collection or interpreter exit otherwise)."""
        self._remove_clips()

    def served_files(self) -> list[str]:
        """Files the page serves by path: none (clips go through Gradio's cache like any output)."""
        return []

    def video_of(self, key: str) -> LibraryVideo:
        """A library video as the manifest records it; a relative source path counts from its feature file's folder."""
        entry = next(video for video in self.index.videos if video.key == key)
        path = None
        if entry.source:
            path = Path(entry.source)
            if not path.is_absolute():
                path = Path(entry.feature_file).resolve().parent / path
        return LibraryVideo(entry.key, path, float(entry.duration), path is not None and path.is_file())

    def search(
        self, queries_text: str | None, top_k: int = DEFAULT_TOP_K, depth: int = DEFAULT_DEPTH, exhaustive=False
    ) -> LibraryHits:
        """Every query (one per line of `queries_text`) over the whole library, through the pipeline."""
        queries = parse_queries(queries_text)
        top_k, depth = int(top_k), int(depth)
        if not 1 <= top_k <= MAX_TOP_K:
            raise ValueError(f"The number of moments per query must be between 1 and {MAX_TOP_K}, got {top_k}.")
        if depth < 1:
            raise ValueError(f"The search depth (segments taken per query) must be at least 1, got {depth}.")
        rankings = self.pipe(
            {"library": str(self.index_folder), "text": queries},
            top_k=top_k,
            depth=depth,
            exhaustive=bool(exhaustive),
            segment_windows=self.segment_windows,
        )
        keys = {moment["key"] for moments in rankings for moment in moments}
        return LibraryHits(queries, rankings, {key: self.video_of(key) for key in keys})

    def clip(self, hits: LibraryHits, choice: str) -> Path:
        """Cut the chosen moment (`"query_index:rank_index"`) from its video into a new mp4 in the clip folder."""
        moment = hits.moment(choice)
        video = hits.videos[moment["key"]]
        if not video.exists:
            raise ValueError(
                f"The video file of {video.key} ({video.path or 'none recorded'}) is not on disk, so its moment cannot "
                "be played. Restore the file, or index the video again from where it is now."
            )
        older = sorted(self.clip_folder.glob("*.mp4"))
        for path in older[: max(len(older) - (KEPT_CLIPS - 1), 0)]:
            path.unlink(missing_ok=True)
        self.clips_cut += 1
        name = f"{self.clips_cut:08d}-{moment['start']:.2f}-{moment['end']:.2f}.mp4"
        return cut_clip(video.path, moment["start"], moment["end"], self.clip_folder / name)

    def _first_playable(self, hits: LibraryHits, choices: list[tuple[str, str]]) -> str | None:
        for _, choice in choices:
            if hits.videos[hits.moment(choice)["key"]].exists:
                return choice
        return None

    def submit(self, queries_text, top_k, depth, exhaustive, progress=None) -> tuple:
        """What the page's "Search" button does: `(timeline_html, moment_dropdown, clip_path, status, hits)`; the clip
        is the best playable moment's. A problem the user can fix raises `gr.Error`, which the page shows."""
        import gradio as gr

        try:
            if progress is not None:
                progress(0, desc="Searching the library")
            hits = self.search(queries_text, top_k, depth, exhaustive)
            choices = hits.moment_choices()
            first = self._first_playable(hits, choices)
            if progress is not None:
                progress(0.95, desc="Cutting the best moment's clip")
            clip = str(self.clip(hits, first)) if first is not None else None
        except USER_ERRORS as error:
            raise gr.Error(str(error), print_exception=False) from error
        count = len(hits.queries)
        status = (
            f"{count} {'query' if count == 1 else 'queries'} searched in {len(self.index.videos)} videos; "
            f"moments in {len(hits.videos)} of them."
        )
        dropdown = gr.Dropdown(choices=choices, value=first, interactive=True)
        return render_library_timeline(hits), dropdown, clip, status, hits

    def build(self):
        """The Gradio page."""
        import gradio as gr

        def submit(queries_text, top_k, depth, exhaustive, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
            return self.submit(queries_text, top_k, depth, exhaustive, progress)

        def play(choice, hits):
            if not choice or hits is None:
                return None
            try:
                return str(self.clip(hits, choice))
            except USER_ERRORS as error:
                raise gr.Error(str(error), print_exception=False) from error

        with gr.Blocks(title="RGNet library search", analytics_enabled=False, delete_cache=(3600, 86400)) as page:
            gr.Markdown(
                "## RGNet: search a video library\n"
                "Type one or more sentences (one per line) and press **Search**. Every video with results gets a "
                "timeline with its moments; pick a moment to play it.\n\n"
                f"Library: `{self.index_folder.name}` ({len(self.index.videos)} videos), model: "
                f"`{_short_name(self.model_name)}`."
            )
            hits_state = gr.State(None)
            with gr.Row():
                with gr.Column(scale=1):
                    queries = gr.Textbox(
                        label="Queries (one per line)",
                        lines=3,
                        placeholder="a man opens the door\nthe car drives away",
                        elem_id="rgnet-queries",
                    )
                    top_k = gr.Slider(
                        1, MAX_TOP_K, value=DEFAULT_TOP_K, step=1, label="Moments per query", elem_id="rgnet-top-k"
                    )
                    depth = gr.Number(
                        value=DEFAULT_DEPTH,
                        precision=0,
                        minimum=1,
                        label="Depth (segments per query)",
                        elem_id="rgnet-depth",
                    )
                    exhaustive = gr.Checkbox(label="Score every window (slow, exact)", elem_id="rgnet-exhaustive")
                    button = gr.Button("Search", variant="primary", elem_id="rgnet-submit")
                    status = gr.Markdown(elem_id="rgnet-status")
                    moment = gr.Dropdown(label="Play a moment", choices=[], elem_id="rgnet-moment")
                    clip = gr.Video(label="Moment clip", interactive=False, height=300, elem_id="rgnet-clip")
                with gr.Column(scale=1):
                    timeline = gr.HTML(label="Moments", elem_id="rgnet-timeline")
            button.click(
                submit,
                inputs=[queries, top_k, depth, exhaustive],
                outputs=[timeline, moment, clip, status, hits_state],
                concurrency_limit=self.concurrency,
                show_progress_on=[timeline],
            )
            moment.input(play, inputs=[moment, hits_state], outputs=[clip], concurrency_limit=1)
        page.queue(max_size=self.max_queue, default_concurrency_limit=1)
        return page


__all__ = ["LibraryHits", "LibrarySearchApp", "LibraryVideo", "render_library_timeline"]
