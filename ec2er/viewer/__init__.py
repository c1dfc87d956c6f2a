"""``ec2er view RUN``: a local, private page for reading a run in the browser, live while it runs.

The viewer only reads a run's documented files (any stage's output folder, or a chain's folder of
stage folders), from any path pyarrow reads (a local folder, ``s3://``...), paged and filtered
without loading a run into memory. It sits on the top floor beside ``ec2er/run.py``: no stage
imports it.

- ``folder``: the run folder, its stage folders found by what they hold, and every path kept
  inside it;
- ``queries``: the dialogues of a generation run (Parquet results: filtered, column-projected,
  paged, files still being written skipped);
- ``jsonl``: JSONL files read a page at a time;
- ``stages``: what each stage's files show (overview, curation, training, evaluation);
- ``app``: the FastAPI app (``build_app``) and its static page (``static/``: no CDN);
- ``cli``: ``ec2er view``, served by uvicorn on 127.0.0.1; ``serve``: the same app as a Ray Serve
  application, to mount beside the model endpoint on a cluster.
"""
