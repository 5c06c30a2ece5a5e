"""Batch OCR: many image files -> one Parquet dataset, one row per file, with the service's reading path.

`inputs` turns folders, globs and manifests into a list of paths; `output` writes the result dataset one
atomically renamed part file per chunk (so `--resume` loses at most the chunk in progress); `engines` reads
files in a local process pool or on Ray Data, each worker holding one ONNX Runtime session; `job` ties them
together.
"""
