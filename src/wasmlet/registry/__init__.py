"""Where functions live: SQL records for names and versions, blobs for module bytes."""
