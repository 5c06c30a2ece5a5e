"""MLflow tracking: the only package that opens, writes and reads tracked runs. One module per job:

- `store`:   where the store is (URI, artifact root, offline store), reachability, experiments, the client
- `runs`:    the tracked-run lifecycle (`tracked_run`), the signal guard, fail-over when the server is lost
- `writing`: logging to runs (params, metrics, tags, datasets, figures, artifacts, the model)
- `reading`: the one reader of runs (`RunRecord`, `get_run`, `search_runs`), their artifacts and models
- `offline`: `ocr sync`, copying runs recorded offline to the server
- `git`:     the Git state a run records

Import from the module that does the job (`from cnn_ocr.tracking.reading import get_run`). Nothing here
imports MLflow at import time (it takes seconds); each function imports it when called.
The model registry (versions, aliases) is `cnn_ocr.registry`.
"""
