"""opskit: deploy the job-agent stack to one VPS and prove it runs right."""

from pathlib import Path

#: The repository root (templates, inventory.yaml, images/ live here).
ROOT = Path(__file__).resolve().parent.parent
