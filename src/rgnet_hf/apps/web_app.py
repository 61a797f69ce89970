"""`rgnet-hf app`: a Gradio web app that grounds typed sentences in a video and plays the moments it finds.

The grounding goes through the `video-grounding` pipeline on the raw video (`{"video": path, "text": [...]}`), so the
model folder's config must name a `feature_encoder`. The page shows each query's ranked moments on a timeline of the
whole video, and plays the moment chosen in a list: the clip is cut from the video with PyAV into a short H.264 mp4.
"""

from __future__ import annotations

import html
import math
import numbers
import os
import shutil
import tempfile
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts")
# Clips are re-encoded for the browser; bounding their height keeps cutting fast for 1080p and 4K sources.
CLIP_MAX_HEIGHT = 480
MAX_TOP_K = 20
LANE_PX = 16  # height of one moment's lane on the timeline
MOMENT_MIN_PX = 14  # least drawn width of a moment: its rank number fits (up to 20)
KEPT_CLIPS = 16
# What one submission may cost, by default: a feature-length film (MAD's movies run up to about 3 hours) in an upload
# a single machine stores and decodes without trouble. The queue holds this many waiting submissions at most.
DEFAULT_MAX_UPLOAD_MB = 500
DEFAULT_MAX_VIDEO_MINUTES = 240
DEFAULT_MAX_QUEUE = 16
MIB = 1024 * 1024  # Gradio's "mb" is 2**20 bytes; the app's limits use the same unit

# Grounding errors a user can cause (bad file, empty query, a model that cannot read videos): shown in the page.
USER_ERRORS = (ValueError, KeyError, OSError)

# `#rgnet-timeline`'s least height holds the progress bar shown on it while a video is grounded (Gradio's status
# overlay is taller than an empty HTML box and would cover the boxes below it).
CSS = """
#rgnet-timeline { min-height: 120px; }
.rgnet-timeline { font-size: 14px; }
.rgnet-query { margin: 0 0 18px 0; }
.rgnet-query-text { font-weight: 600; margin-bottom: 4px; }
.rgnet-track { position: relative; background: #e5e7eb; border-radius: 4px; overflow: hidden; }
.rgnet-moment { position: absolute; background: #ea580c; border-radius: 3px; color: #fff;
  font-size: 11px; text-align: center; overflow: hidden; }
.rgnet-axis { display: flex; justify-content: space-between; color: #6b7280; font-size: 11px; margin-top: 2px; }
.rgnet-table { border-collapse: collapse; margin-top: 6px; font-size: 13px; }
.rgnet-table th, .rgnet-table td { padding: 2px 10px; text-align: right; border-bottom: 1px solid #e5e7eb; }
.rgnet-notice { padding: 8px 12px; border-radius: 6px; background: #fef3c7; color: #92400e; }
"""


def temporary_clip_folder(owner: object) -> tuple[Path, weakref.finalize]:
    """A new temporary folder for an app's cut clips, removed with its contents when `owner` is collected or the
    interpreter exits (or when the returned finalizer is called)."""
    folder = Path(tempfile.mkdtemp(prefix="rgnet-app-clips-"))
    return folder, weakref.finalize(owner, shutil.rmtree, folder, ignore_errors=True)


@dataclass
class GroundingResult:
    """What one submission found: the video, its length and, per query, the ranked moments (best first)."""

    video: str
    duration: float
    queries: list[str]
    rankings: list[list[dict[str, Any]]] = field(default_factory=list)
    declared_duration: float | None = None  # set for a truncated file grounded with `allow_truncated`

    def moment_choices(self) -> list[tuple[str, str]]:
        """`(label, "query_index:rank_index")` for every moment, in query then rank order."""
        choices = []
        for query_index, (query, moments) in enumerate(zip(self.queries, self.rankings)):
            for rank_index, moment in enumerate(moments):
                label = f"Q{query_index + 1} #{rank_index + 1}: {moment['start']:.2f}-{moment['end']:.2f} s ({query})"
                choices.append((label[:120], f"{query_index}:{rank_index}"))
        return choices

    def moment(self, choice: str) -> dict[str, Any]:
        query_index, rank_index = (int(part) for part in choice.split(":"))
        return self.rankings[query_index][rank_index]


def parse_queries(text: str | None) -> list[str]:
    """One query per non-blank line; an error when there is none."""
    queries = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not queries:
        raise ValueError("Type at least one query (one sentence per line).")
    return queries


def _positive_limit(name: str, value: float | None, integer: bool = False) -> float | int | None:
    """`value` checked as a limit: None (no limit) or a positive number (an integer where `integer`)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (value > 0 and math.isfinite(value)):
        raise ValueError(f"`{name}` must be a positive number (or None for no limit), got {value!r}")
    if integer:
        if int(value) != value:
            raise ValueError(f"`{name}` must be a whole number, got {value!r}")
        return int(value)
    return value


def cut_clip(
    video: str | Path, start: float, end: float, output: str | Path, max_height: int = CLIP_MAX_HEIGHT
) -> Path:
    """Write the frames of `video` shown during `[start, end)` seconds to `output` as an H.264 mp4 a browser plays.

    Times count from the video's first frame. The clip starts with the frame on screen at `start` (so a moment
    shorter than a frame still gives one frame), is silent, at most `max_height` pixels high (aspect ratio kept) and
    upright. Frames are decoded and encoded one at a time: memory does not grow with the moment's length.
    """
    import av

    output = Path(output)
    with av.open(str(video)) as source:
        if not source.streams.video:
            raise ValueError(f"{Path(video).name} has no video stream")
        stream = source.streams.video[0]
        stream.thread_type = "AUTO"
        clip_rate = Fraction(stream.average_rate or stream.guessed_rate or 25).limit_denominator(100000)
        sink = encoder = None
        try:
            for index, frame in enumerate(_frames_shown(source, stream, start, end)):
                frame = _upright(frame)
                if encoder is None:
                    width, height = frame.width, frame.height
                    if height > max_height:
                        width, height = round(width * max_height / height), max_height
                    sink = av.open(str(output), "w", format="mp4", options={"movflags": "+faststart"})
                    encoder = sink.add_stream("libx264", rate=clip_rate)
                    # yuv420p, the pixel format browsers decode, needs even sides.
                    encoder.width, encoder.height = max(2, width - width % 2), max(2, height - height % 2)
                    encoder.pix_fmt = "yuv420p"
                    encoder.options = {"preset": "veryfast", "crf": "23"}
                picture = frame.reformat(width=encoder.width, height=encoder.height, format="yuv420p")
                picture.pts, picture.time_base = index, 1 / clip_rate
                for packet in encoder.encode(picture):
                    sink.mux(packet)
            if encoder is None:
                raise ValueError(f"no frame of {Path(video).name} is shown during [{start:.2f}, {end:.2f}] s")
            for packet in encoder.encode():
                sink.mux(packet)
        finally:
            if sink is not None:
                sink.close()
    return output


def _frames_shown(source, stream, start: float, end: float):
    """The decoded frames on screen during `[start, end)` seconds (from the first frame), in order."""
    # Moments count from the first frame, whatever timestamp the container gives it.
    offset = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    if start > 0:
        # The keyframe at or before the start; decoding runs forward from there.
        source.seek(int((start + offset) / stream.time_base), stream=stream, backward=True, any_frame=False)
    on_screen = None  # the last frame at or before `start`
    for frame in source.decode(stream):
        if frame.time is None:
            continue
        time = frame.time - offset
        if time <= start:
            on_screen = frame
            continue
        if on_screen is not None:
            yield on_screen
            on_screen = None
        if time >= end:
            return
        yield frame
    if on_screen is not None:
        yield on_screen


def _upright(frame):
    """The frame turned by its display rotation (phone videos), since the re-encoded clip carries no rotation."""
    quarter_turns = round((getattr(frame, "rotation", 0) or 0) / 90) % 4
    if not quarter_turns:
        return frame
    import av
    import numpy as np

    image = np.ascontiguousarray(np.rot90(frame.to_ndarray(format="rgb24"), k=quarter_turns))
    return av.VideoFrame.from_ndarray(image, format="rgb24")


def render_timeline(result: GroundingResult) -> str:
    """HTML: per query, the whole video as a bar with the ranked moments on it (one lane per rank, best on top), and a
    table of the moments.

    Each moment carries `data-rank`, `data-start`, `data-end` and `data-score` so that it can be read back from
    the page.
    """
    duration = max(result.duration, 1e-6)
    parts = [f'<div class="rgnet-timeline" data-duration="{result.duration:.4f}">']
    for query_index, (query, moments) in enumerate(zip(result.queries, result.rankings)):
        count = len(moments)
        parts.append(f'<div class="rgnet-query" data-query-index="{query_index}" data-query="{html.escape(query)}">')
        parts.append(f'<div class="rgnet-query-text">Q{query_index + 1}. {html.escape(query)}</div>')
        # One lane per rank, best on top: overlapping moments stay readable.
        parts.append(f'<div class="rgnet-track" style="height:{count * LANE_PX + 4}px">')
        for rank_index, moment in enumerate(moments):
            left = 100 * min(max(moment["start"] / duration, 0.0), 1.0)
            width = 100 * min(max((moment["end"] - moment["start"]) / duration, 0.0), 1.0 - left / 100)
            opacity = 1.0 - 0.6 * rank_index / max(count - 1, 1)
            # At least wide enough for its rank number; a short moment at the very end grows to the left, so that it
            # stays inside the bar (whose overflow is hidden).
            span = f"left:min({left:.3f}%, calc(100% - {MOMENT_MIN_PX}px));width:max({width:.3f}%, {MOMENT_MIN_PX}px)"
            parts.append(
                f'<div class="rgnet-moment" data-rank="{rank_index + 1}" data-start="{moment["start"]:.4f}" '
                f'data-end="{moment["end"]:.4f}" data-score="{moment["score"]:.6f}" '
                f'title="#{rank_index + 1}: {moment["start"]:.2f}-{moment["end"]:.2f} s, score {moment["score"]:.3f}" '
                f'style="{span};top:{2 + rank_index * LANE_PX}px;height:{LANE_PX - 2}px;'
                f'line-height:{LANE_PX - 2}px;opacity:{opacity:.2f}">{rank_index + 1}</div>'
            )
        parts.append("</div>")
        parts.append(
            f'<div class="rgnet-axis"><span>0:00</span><span>{_clock(result.duration / 2)}</span>'
            f"<span>{_clock(result.duration)}</span></div>"
        )
        parts.append(
            '<table class="rgnet-table"><tr><th>rank</th><th>start (s)</th><th>end (s)</th><th>score</th></tr>'
        )
        for rank_index, moment in enumerate(moments):
            parts.append(
                f"<tr><td>{rank_index + 1}</td><td>{moment['start']:.2f}</td><td>{moment['end']:.2f}</td>"
                f"<td>{moment['score']:.3f}</td></tr>"
            )
        parts.append("</table></div>")
    parts.append("</div>")
    return "".join(parts)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def _short_name(model: str) -> str:
    """A local folder's own name (its full path is long and says little on the page); Hub ids as they are."""
    return Path(model).name if Path(model).is_dir() else model


def example_videos(paths: Sequence[str | Path] | None) -> list[Path]:
    """Video files named directly or found (not recursively) in the given folders, in name order."""
    videos = []
    for path in paths or ():
        path = Path(path)
        if path.is_dir():
            videos += sorted(item for item in path.iterdir() if item.suffix.lower() in VIDEO_SUFFIXES)
        elif path.is_file():
            videos.append(path)
        else:
            raise FileNotFoundError(f"No such example video or folder: {path}")
    return [video.resolve() for video in videos]


class GroundingApp:
    """The app's logic, independent of the page: a `video-grounding` pipeline, grounding and clip cutting.

    Args:
        model: a saved RGNet folder or Hub id whose config names a `feature_encoder`.
        device: where the pipeline runs (`"cpu"`, `"cuda"`, ...); default: the pipeline's choice.
        examples: example video files or folders of videos shown under the upload box.
        pipe: an already built `video-grounding` pipeline (then `model` and `device` are ignored).
        max_upload_mb: the largest video file a submission may ground, in MB of 2**20 bytes (None: no limit). When
            the app is served with [`launch`], the page also refuses larger uploads before sending them.
        max_video_minutes: the longest video a submission may ground, by the duration its container declares (None:
            no limit). Both limits are checked before anything is decoded, for uploads and examples alike.
        max_queue: how many submissions may wait for their turn (None: no limit); when the queue is full the page
            says so and the submission is not queued.
        concurrency: how many submissions are grounded at the same time; the others wait in the queue.
    """

    def __init__(
        self,
        model: str | Path | None = None,
        device: str | None = None,
        examples: Sequence[str | Path] | None = None,
        pipe=None,
        max_upload_mb: float | None = DEFAULT_MAX_UPLOAD_MB,
        max_video_minutes: float | None = DEFAULT_MAX_VIDEO_MINUTES,
        max_queue: int | None = DEFAULT_MAX_QUEUE,
        concurrency: int = 1,
        allow_truncated: bool = False,
    ):
        # Checked before the model loads: a bad limit fails at once.
        self.max_upload_mb = _positive_limit("max_upload_mb", max_upload_mb)
        self.max_video_minutes = _positive_limit("max_video_minutes", max_video_minutes)
        self.max_queue = _positive_limit("max_queue", max_queue, integer=True)
        self.concurrency = _positive_limit("concurrency", concurrency, integer=True)
        if self.concurrency is None:
            raise ValueError("`concurrency` must be a positive whole number, got None")
        if pipe is None:
            if model is None:
                raise ValueError("give a model folder (or Hub id) or a pipeline")
            from transformers import pipeline

            import rgnet_hf  # noqa: F401 - registers the pipeline

            pipe = pipeline("video-grounding", model=str(model), device=device)
        self.pipe = pipe
        self.allow_truncated = bool(allow_truncated)
        self.pipe.allow_truncated = self.allow_truncated
        self.model_name = str(model) if model is not None else getattr(pipe.model, "name_or_path", "model")
        self.examples = example_videos(examples)
        self.clip_folder, self._remove_clips = temporary_clip_folder(self)
        self.clips_cut = 0

    def close(self) -> None:
        """Remove the clip folder (done at garbage collection or interpreter exit otherwise)."""
        self._remove_clips()

    def served_files(self) -> list[str]:
        """Files the page serves by path: the example videos themselves (clips and uploads are in Gradio's cache)."""
        return sorted({str(Path(path).resolve()) for path in self.examples})

    @property
    def feature_encoder(self) -> str | None:
        return getattr(self.pipe.model.config, "feature_encoder", None)

    def encoder_problem(self) -> str | None:
        """Why this model cannot ground a video file, or None when it can."""
        if self.feature_encoder:
            return None
        return (
            f"The model {self.model_name} names no feature encoder (`feature_encoder` in its config is empty), so "
            "it cannot turn a video and sentences into features. Use a model whose config names one (the MAD "
            "presets use openai/clip-vit-base-patch32), or ground pre-extracted features with `rgnet-hf ground`."
        )

    def ground(self, video: str | Path | None, queries_text: str | None, top_k: int = 5) -> GroundingResult:
        """Ground every query (one per line of `queries_text`) in `video` with the pipeline, once the video is found
        within the app's limits ([`~GroundingApp.check_limits`])."""
        if not video:
            raise ValueError("Choose an example video or upload one first.")
        queries = parse_queries(queries_text)
        problem = self.encoder_problem()
        if problem:
            raise ValueError(problem)
        top_k = int(top_k)
        if not 1 <= top_k <= MAX_TOP_K:
            raise ValueError(f"The number of moments per query must be between 1 and {MAX_TOP_K}, got {top_k}.")
        video = str(video)
        duration = self.check_limits(video)  # also rejects a file that is not a video, before any decoding
        rankings = self.pipe({"video": video, "text": queries}, top_k=top_k)
        if len(rankings) != len(queries):
            raise RuntimeError(f"the pipeline answered {len(rankings)} queries for {len(queries)}")
        encoded = getattr(getattr(self.pipe, "processor", None), "last_encoded_video", None)
        if encoded is not None and encoded.declared_duration is not None:
            # a truncated file grounded on request: everything is on the decoded length
            return GroundingResult(video, encoded.duration, queries, rankings, encoded.declared_duration)
        # The pipeline clips moments to the decoded length, which a container's declared duration may undercut.
        last_end = max((moment["end"] for moments in rankings for moment in moments), default=0.0)
        duration = max(duration or 0.0, last_end)
        return GroundingResult(video=video, duration=duration, queries=queries, rankings=rankings)

    def check_limits(self, video: str | Path) -> float | None:
        """Refuse a video beyond the app's size or duration limits; return its declared duration in seconds.

        Only the file's size and its container's header are read: a file stamped to last 20 hours is refused
        before any frame is decoded or encoded. Raises `ValueError` (a video decoding error for a file that is not a
        video, a still image among them) with the limit, the file's value and the option that raises the limit.
        """
        from ..video_decoding import _declared_duration

        name = Path(video).name
        if self.max_upload_mb is not None and os.path.isfile(video):
            size_mb = os.path.getsize(video) / MIB
            if size_mb > self.max_upload_mb:
                raise ValueError(
                    f"{name} is {size_mb:.1f} MB, more than this app's limit of {self.max_upload_mb:g} MB per video. "
                    "Cut the video shorter, or raise the limit when starting the app (`rgnet-hf app --max-upload-mb`, "
                    "`GroundingApp(max_upload_mb=...)`)."
                )
        duration = _declared_duration(video)
        if self.max_video_minutes is None:
            return duration
        if duration is None:
            raise ValueError(
                f"{name} does not declare its duration, so the work it would cost cannot be bounded before decoding "
                f"(this app grounds videos of up to {self.max_video_minutes:g} minutes). Remux it into a container "
                "that declares it (e.g. `ffmpeg -i IN -c copy OUT.mp4`), or start the app without a duration limit "
                "(`GroundingApp(max_video_minutes=None)`)."
            )
        if duration > self.max_video_minutes * 60:
            raise ValueError(
                f"{name} lasts {duration / 60:.1f} minutes (by its container), more than this app's limit of "
                f"{self.max_video_minutes:g} minutes per video. Cut the video shorter, or raise the limit when "
                "starting the app (`rgnet-hf app --max-video-minutes`, `GroundingApp(max_video_minutes=...)`)."
            )
        return duration

    def submit(self, video: str | None, queries_text: str | None, top_k: int, progress=None) -> tuple:
        """What the page's "Find moments" button does: `(timeline_html, moment_dropdown, clip_path, status, result)`.

        A problem the user can fix (no video, no query, a file beyond the limits, ...) raises `gr.Error`, which
        the page shows; `progress` is Gradio's progress tracker (None: no progress is reported).
        """
        import gradio as gr

        try:
            if progress is not None:
                progress(0, desc="Reading and encoding the video")
            result = self.ground(video, queries_text, top_k)
            choices = result.moment_choices()
            if progress is not None:
                progress(0.95, desc="Cutting the best moment's clip")
            clip = str(self.clip(result, choices[0][1])) if choices else None
        except USER_ERRORS as error:
            raise gr.Error(str(error), print_exception=False) from error
        count = len(result.queries)
        status = f"{count} {'query' if count == 1 else 'queries'} grounded in a {result.duration:.1f} s video."
        if result.declared_duration is not None:
            status += (
                f" The file is truncated: its container declares {result.declared_duration:.1f} s, its frames stop "
                f"at {result.duration:.1f} s, and only the decoded part was grounded."
            )
        dropdown = gr.Dropdown(choices=choices, value=choices[0][1] if choices else None, interactive=True)
        return render_timeline(result), dropdown, clip, status, result

    def clip(self, result: GroundingResult, choice: str) -> Path:
        """Cut the chosen moment (`"query_index:rank_index"`) into a new mp4 in the app's clip folder."""
        moment = result.moment(choice)
        # Gradio serves a copy of each clip, so only the newest few are kept here (names start with a counter).
        older = sorted(self.clip_folder.glob("*.mp4"))
        for path in older[: max(len(older) - (KEPT_CLIPS - 1), 0)]:
            path.unlink(missing_ok=True)
        self.clips_cut += 1
        name = f"{self.clips_cut:08d}-moment-{moment['start']:.2f}-{moment['end']:.2f}.mp4"
        return cut_clip(result.video, moment["start"], moment["end"], self.clip_folder / name)

    def build(self):
        """The Gradio page."""
        import gradio as gr

        def submit(video, queries_text, top_k, progress=gr.Progress(track_tqdm=True)):  # noqa: B008 - Gradio's API
            return self.submit(video, queries_text, top_k, progress)

        def play(choice, result):
            if not choice or result is None:
                return None
            try:
                return str(self.clip(result, choice))
            except USER_ERRORS as error:
                raise gr.Error(str(error), print_exception=False) from error

        # A long-running server drops uploads and clips from Gradio's cache after a day.
        with gr.Blocks(title="RGNet video grounding", analytics_enabled=False, delete_cache=(3600, 86400)) as page:
            gr.Markdown(
                "## RGNet: find moments in a video\n"
                "Choose a video, type one or more sentences (one per line) and press **Find moments**. "
                "Every query gets its ranked moments on a timeline of the whole video; pick a moment to play it.\n\n"
                f"Model: `{_short_name(self.model_name)}`, feature encoder: "
                f"`{_short_name(self.feature_encoder) if self.feature_encoder else 'none'}`."
            )
            problem = self.encoder_problem()
            if problem:
                gr.HTML(f'<div class="rgnet-notice">{html.escape(problem)}</div>')
            result_state = gr.State(None)
            with gr.Row():
                with gr.Column(scale=1):
                    video = gr.Video(label="Video", sources=["upload"], height=300, elem_id="rgnet-video")
                    if self.examples:
                        gr.Examples(examples=[[str(path)] for path in self.examples], inputs=[video], label="Examples")
                    queries = gr.Textbox(
                        label="Queries (one per line)",
                        lines=3,
                        placeholder="a man opens the door\nthe car drives away",
                        elem_id="rgnet-queries",
                    )
                    top_k = gr.Slider(1, MAX_TOP_K, value=5, step=1, label="Moments per query", elem_id="rgnet-top-k")
                    button = gr.Button("Find moments", variant="primary", elem_id="rgnet-submit")
                    status = gr.Markdown(elem_id="rgnet-status")
                with gr.Column(scale=1):
                    # The page's CSS keeps it tall enough, even empty, to hold the progress bar drawn on it.
                    timeline = gr.HTML(label="Moments", elem_id="rgnet-timeline")
                    moment = gr.Dropdown(label="Play a moment", choices=[], elem_id="rgnet-moment")
                    clip = gr.Video(label="Moment clip", interactive=False, height=300, elem_id="rgnet-clip")
            button.click(
                submit,
                inputs=[video, queries, top_k],
                outputs=[timeline, moment, clip, status, result_state],
                concurrency_limit=self.concurrency,
                # One progress bar, on the timeline: on every output, each box would draw its own over its neighbours.
                show_progress_on=[timeline],
            )
            # Playing a clip is its own event with its own limit, so it never waits behind a grounding.
            moment.input(play, inputs=[moment, result_state], outputs=[clip], concurrency_limit=1)
        # Submissions beyond `concurrency` wait in a bounded queue; a full queue refuses new ones with a message.
        page.queue(max_size=self.max_queue, default_concurrency_limit=1)
        return page


def launch(
    app,
    host: str = "127.0.0.1",
    port: int | None = None,
    share: bool = False,
    block: bool = True,
    quiet: bool = False,
):
    """Build the page of `app` (a [`GroundingApp`] or a `LibrarySearchApp`) and serve it; with `block=False` return
    the running `gr.Blocks` (close it with `.close()`)."""
    import gradio as gr

    # System fonts: the page renders the same offline and requests nothing from font services.
    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )
    page = app.build()  # with its queue
    page.launch(
        server_name=host,
        server_port=port,
        share=share,
        prevent_thread_lock=not block,
        quiet=quiet,
        show_error=True,
        ssr_mode=False,
        theme=theme,
        css=CSS,
        # The example files themselves, never their folders: a folder would serve every file beside an example.
        # Clips and uploads live in Gradio's own cache, which it serves without being told.
        allowed_paths=app.served_files(),
        # Gradio refuses a larger upload before storing it; `GroundingApp.check_limits` covers examples and files
        # given by path.
        max_file_size=int(app.max_upload_mb * MIB) if app.max_upload_mb is not None else None,
    )
    return page


__all__ = ["GroundingApp", "GroundingResult", "cut_clip", "launch", "parse_queries", "render_timeline"]
