"""Videos for the web app's tests that the shared helpers do not make."""

from __future__ import annotations


def make_stamped_video(path, last_time_s: float):
    """A tiny mp4 (about 1.5 KB) of two 32 x 32 frames, the second stamped `last_time_s` seconds in."""
    import av
    import numpy as np

    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=1)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for pts in (0, int(last_time_s)):
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            frame = frame.reformat(format="yuv420p")
            frame.pts = pts
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
