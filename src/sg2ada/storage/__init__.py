"""Remote storage for runs: object stores (S3, GCS, Azure) and any fsspec location.

`open_store(uri)` gives a `Store` with put/get/list/delete under one prefix, built on fsspec:
s3fs, gcsfs and adlfs come from the optional `cloud` extra, and each reads its credentials and
endpoint the standard way (AWS variables and `AWS_ENDPOINT_URL`, Google application credentials
and `STORAGE_EMULATOR_HOST`, `AZURE_STORAGE_CONNECTION_STRING`). `Uploader` runs uploads on one
background thread, in order, retrying with exponential backoff until they succeed, so that
training never waits on the network. No TensorFlow here: the run and checkpoint layout lives in
`sg2ada.training.checkpoint`.
"""

from sg2ada.storage.store import LocalFileMissing, Store, open_store, short_error
from sg2ada.storage.uploader import Uploader

__all__ = ["LocalFileMissing", "Store", "Uploader", "open_store", "short_error"]
