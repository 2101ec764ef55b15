"""Stage 3 of the S3/export target: copy staging to an object store and write the manifest
last (:func:`~.publisher.publish`), keep-N retention, and the manifest reader."""
