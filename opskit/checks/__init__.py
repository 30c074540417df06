"""Programs run inside built images (import checks): data read by `opskit.images`, never imported."""
