"""Generated data: a synthetic long-video benchmark in MAD's file format and miniature MAD / Ego4D-NLQ releases."""
