"""A small corpus of real video files with sentences, for `rgnet-hf demo` and the tests of the own-data path.

Each video is a few minutes of a dark, slowly drifting scene in which coloured shapes appear at known times: a red
circle from 31.5 s to 40.0 s, a blue square from 52.0 s to 61.5 s, and so on. Within one video every colour appears
at most once, so each sentence ("a red circle appears") names exactly one moment. The files are encoded with PyAV
(H.264 in MP4 and Matroska containers) and decoded back like any user's videos; the annotations are a JSONL file in
the format `rgnet-hf prepare` reads (`video`, `sentence`, `start`, `end`, `query_id`, `duration`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .video_files import write_rgb_video

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 80, 235),
    "yellow": (235, 220, 40),
    "purple": (160, 60, 210),
    "orange": (245, 140, 30),
    "white": (235, 235, 235),
    "cyan": (40, 215, 225),
}
SHAPES = ("circle", "square", "triangle")
TEMPLATES = (
    "a {colour} {shape} appears",
    "the {colour} {shape} is on the screen",
    "a {shape} in {colour} shows up",
    "we see a {colour} {shape}",
)


@dataclass(frozen=True)
class VideoCorpusConfig:
    """What [`write_video_corpus`] writes.

    Args:
        num_videos: number of video files.
        video_seconds: range of a video's length, seconds.
        events_per_video: range of the number of shapes shown in one video (at most `len(COLOURS)`).
        event_seconds: range of the time one shape stays on screen, seconds.
        fps: frame rate of the files.
        frame_size: width and height of the frames, pixels.
        containers: file extensions used in turn (`mp4`, `mkv`).
        seed: seed of everything random.
    """

    num_videos: int = 40
    video_seconds: tuple[float, float] = (150.0, 210.0)
    events_per_video: tuple[int, int] = (6, 8)
    event_seconds: tuple[float, float] = (4.0, 14.0)
    fps: float = 2.0
    frame_size: int = 64
    containers: tuple[str, ...] = ("mp4", "mkv")
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_videos < 1:
            raise ValueError(f"num_videos must be at least 1, got {self.num_videos}")
        low, high = self.events_per_video
        if not 1 <= low <= high <= len(COLOURS):
            raise ValueError(f"events_per_video must lie in [1, {len(COLOURS)}], got {self.events_per_video}")
        if not 0 < self.event_seconds[0] <= self.event_seconds[1]:
            raise ValueError(f"event_seconds must be a positive range, got {self.event_seconds}")
        if self.video_seconds[0] < high * (self.event_seconds[1] + 2.0):
            raise ValueError(
                f"videos of {self.video_seconds[0]} s cannot hold {high} events of up to {self.event_seconds[1]} s"
            )


def _shape_mask(shape: str, size: int, centre: tuple[float, float]) -> np.ndarray:
    rows, columns = np.mgrid[0:size, 0:size].astype(np.float32)
    cx, cy = centre
    radius = 0.3 * size
    if shape == "circle":
        return (columns - cx) ** 2 + (rows - cy) ** 2 < radius**2
    if shape == "square":
        return (np.abs(columns - cx) < 0.85 * radius) & (np.abs(rows - cy) < 0.85 * radius)
    # A triangle pointing up: its width grows from the top vertex to the base.
    height = rows - (cy - radius)
    return (height > 0) & (height < 2 * radius) & (np.abs(columns - cx) < height / 2)


def _plan_events(rng: np.random.Generator, duration: float, config: VideoCorpusConfig) -> list[dict]:
    """Non-overlapping events at random times (at least 2 s apart), each of a different colour."""
    count = int(rng.integers(config.events_per_video[0], config.events_per_video[1] + 1))
    lengths = np.round(rng.uniform(*config.event_seconds, size=count) * 2) / 2
    free = duration - lengths.sum() - 2.0 * (count + 1)
    gaps = rng.dirichlet(np.ones(count + 1)) * free + 2.0
    colours = rng.choice(list(COLOURS), size=count, replace=False)
    events, time = [], 0.0
    for index in range(count):
        time += gaps[index]
        start = float(np.floor(time * 2) / 2)
        events.append(
            {
                "colour": str(colours[index]),
                "shape": SHAPES[int(rng.integers(len(SHAPES)))],
                "start": start,
                "end": start + float(lengths[index]),
            }
        )
        time = start + lengths[index]
    return events


def _write_video(path: Path, duration: float, events: list[dict], rng: np.random.Generator, config) -> None:
    size = config.frame_size
    background = rng.uniform(30, 50, size=3)
    drift = rng.uniform(0, 2 * np.pi, size=3)

    def frames():
        for index in range(int(np.floor(duration * config.fps))):
            time = index / config.fps
            # The scene drifts slowly in brightness and has sensor noise, so no two frames are alike.
            tone = background + 8.0 * np.sin(2 * np.pi * time / 60.0 + drift)
            image = np.broadcast_to(tone, (size, size, 3)).astype(np.float32)
            for event in events:
                if event["start"] <= time < event["end"]:
                    centre = (size / 2 + rng.uniform(-3, 3), size / 2 + rng.uniform(-3, 3))
                    image = image.copy()
                    image[_shape_mask(event["shape"], size, centre)] = COLOURS[event["colour"]]
            yield time, np.clip(image + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)

    options = {"crf": "18", "g": str(int(10 * config.fps)), "bf": "0"}
    write_rgb_video(path, frames(), fps=config.fps, size=(size, size), options=options)


def corpus_sentences() -> list[str]:
    """Every sentence the corpus can hold (for building a tokenizer that knows its words)."""
    return [
        template.format(colour=colour, shape=shape) for template in TEMPLATES for colour in COLOURS for shape in SHAPES
    ]


def write_video_corpus(folder: str | os.PathLike, config: VideoCorpusConfig | None = None) -> dict:
    """Write `folder/videos/*.{mp4,mkv}` and `folder/annotations.jsonl`; return a summary.

    Returns:
        `{"videos": folder, "annotations": path, "num_videos": int, "num_queries": int, "hours": float}`.
    """
    config = config if config is not None else VideoCorpusConfig()
    folder = Path(folder)
    videos = folder / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(config.seed)
    rows, total_seconds = [], 0.0
    for index in range(config.num_videos):
        duration = float(np.round(rng.uniform(*config.video_seconds)))
        events = _plan_events(rng, duration, config)
        name = f"scene{index:03d}.{config.containers[index % len(config.containers)]}"
        _write_video(videos / name, duration, events, rng, config)
        total_seconds += duration
        for number, event in enumerate(events):
            template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
            rows.append(
                {
                    "query_id": f"scene{index:03d}_{number}",
                    "video": name,
                    "sentence": template.format(colour=event["colour"], shape=event["shape"]),
                    "start": event["start"],
                    "end": event["end"],
                    "duration": num_frames_duration(duration, config.fps),
                }
            )
    annotations = folder / "annotations.jsonl"
    annotations.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return {
        "videos": str(videos),
        "annotations": str(annotations),
        "num_videos": config.num_videos,
        "num_queries": len(rows),
        "hours": total_seconds / 3600,
    }


def num_frames_duration(duration: float, fps: float) -> float:
    """The length a decoder reports for a file of `duration` seconds at `fps`: its frame count over the rate."""
    return float(np.floor(duration * fps) / fps)


__all__ = ["COLOURS", "SHAPES", "TEMPLATES", "VideoCorpusConfig", "corpus_sentences", "write_video_corpus"]
